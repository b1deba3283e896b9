#!/usr/bin/env bash
# Live benchmarks of issue 5 (LIVE stack + SIMULATED engines). Each command starts its own
# embedded NATS + Postgres and a fresh deployment per run; results land next to this script.
# Takes ~25 min (live) + ~1 min (overhead) + ~10 min (scaling) on the 2-core dev machine.
# Check `uptime` first: timings stretch when the load average exceeds the number of CPUs.
set -euo pipefail
cd "$(dirname "$0")/../.."

autellix bench live --workload mixed --policies fcfs,plas,atlas --programs 60 --out bench/live/mixed
autellix bench overhead --out bench/overhead --py-spy bench/overhead/scheduler.collapsed.txt
autellix bench scaling --engines 1,2,4,8 --schedulers 1,2 --out bench/scaling
