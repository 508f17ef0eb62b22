#!/bin/bash
#COBALT -n {{ job.num_nodes }}
#COBALT -t {{ job.wall_time_minutes }}
{% if job.queue %}#COBALT -q {{ job.queue }}
{% endif %}{% if job.project %}#COBALT -A {{ job.project }}
{% endif %}{% for flag in scheduler_flags %}#COBALT {{ flag }}
{% endfor %}
# Balsam batch job {{ job.id }}: {{ job.num_nodes }} node(s), {{ job.wall_time_minutes }} min, {{ job.job_mode }} mode.
# Rendered from the default Cobalt template; override it with job-templates/cobalt.sh in the
# project or in ~/.balsam (for example to add --attrs).
umask {{ umask }}
export PATH={{ bin_dir | quote }}:"$PATH"
cd {{ project_dir | quote }} || exit 1
source {{ activate | quote }} {{ project_dir | quote }} || exit 1
exec {{ launcher }}
