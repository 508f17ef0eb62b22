#!/bin/bash
# Balsam batch job {{ job.id }}: {{ job.num_nodes }} node(s), {{ job.wall_time_minutes }} min, {{ job.job_mode }} mode,
# run on this host by the local scheduler. Override this template with job-templates/local.sh
# in the project or in ~/.balsam.
umask {{ umask }}
export PATH={{ bin_dir | quote }}:"$PATH"
cd {{ project_dir | quote }} || exit 1
source {{ activate | quote }} {{ project_dir | quote }} || exit 1
exec {{ launcher }} --nodes {{ job.num_nodes }}
