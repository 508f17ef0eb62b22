#!/bin/bash
#PBS -N balsam-{{ job.id }}
#PBS -l select={{ job.num_nodes }}
#PBS -l place=scatter:excl
#PBS -l walltime={{ walltime }}
#PBS -o {{ output }}
#PBS -j oe
{% if job.queue %}#PBS -q {{ job.queue }}
{% endif %}{% if job.project %}#PBS -A {{ job.project }}
{% endif %}{% for flag in scheduler_flags %}#PBS {{ flag }}
{% endfor %}
# Balsam batch job {{ job.id }}: {{ job.num_nodes }} node(s), {{ job.wall_time_minutes }} min, {{ job.job_mode }} mode.
# Rendered from the default PBS template; override it with job-templates/pbs.sh in the
# project or in ~/.balsam (for example to add a site's -l filesystems=... resources). Whole
# nodes, one chunk per node (place=scatter:excl): balsam places tasks on nodes. Where nodes are
# shared, drop :excl in the copy.
umask {{ umask }}
export PATH={{ bin_dir | quote }}:"$PATH"
cd {{ project_dir | quote }} || exit 1
source {{ activate | quote }} {{ project_dir | quote }} || exit 1
exec {{ launcher }}
