#!/bin/bash
#SBATCH --job-name=balsam-{{ job.id }}
#SBATCH --nodes={{ job.num_nodes }}
#SBATCH --exclusive
#SBATCH --time={{ job.wall_time_minutes }}
#SBATCH --output={{ output }}
{% if job.queue %}#SBATCH --partition={{ job.queue }}
{% endif %}{% if job.project %}#SBATCH --account={{ job.project }}
{% endif %}{% for flag in scheduler_flags %}#SBATCH {{ flag }}
{% endfor %}
# Balsam batch job {{ job.id }}: {{ job.num_nodes }} node(s), {{ job.wall_time_minutes }} min, {{ job.job_mode }} mode.
# Rendered from the default Slurm template; override it with job-templates/slurm.sh in the
# project or in ~/.balsam. Whole nodes (--exclusive): balsam places tasks on nodes, and Slurm
# would otherwise give the job one core per node. Where nodes are shared, drop that line in the
# copy and give tasks no more ranks x threads per node than the job's cores on a node.
umask {{ umask }}
export PATH={{ bin_dir | quote }}:"$PATH"
cd {{ project_dir | quote }} || exit 1
source {{ activate | quote }} {{ project_dir | quote }} || exit 1
exec {{ launcher }}
