#!/usr/bin/env bash
# The committed live benchmarks of issue 5 (LIVE stack + SIMULATED engines). Each command starts
# its own embedded NATS + Postgres and a fresh deployment per run; results land under bench/.
# Wall time on the 2-core dev machine: ~25 min + ~50 min (600 programs) + ~1 min + ~10 min.
# Check `uptime` first: timings stretch when the load average exceeds the number of CPUs.
set -euo pipefail
cd "$(dirname "$0")/../.."

autellix bench live --workload mixed --policies fcfs,plas,atlas --programs 60 \
  --loads 0.3,0.8,1.2,1.6 --out bench/live/mixed
autellix bench live --workload mixed --policies fcfs,plas,atlas --programs 600 \
  --loads 1.2 --out bench/live/mixed-600
autellix bench overhead --out bench/overhead --py-spy bench/overhead/scheduler.collapsed.txt
autellix bench scaling --engines 1,2,4,8 --schedulers 1,2 --out bench/scaling
python bench/live/stepper_drift.py uvloop
