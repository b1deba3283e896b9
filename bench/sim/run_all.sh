#!/usr/bin/env bash
# SIMULATED sweeps behind bench/README.md: the four workloads of issue 4, every policy, one engine,
# the published A100 / Llama-3.1-8B profile (the cpu-tiny profile is not calibrated yet).
# Without --data the ShareGPT and BFCL kinds are synthetic (no public data on this machine); pass
# e.g. DATA="--data ShareGPT_V3_unfiltered_cleaned_split.json --data BFCL_v3_multi_turn_base.json".
set -euo pipefail
cd "$(dirname "$0")/../.."
PROGRAMS="${PROGRAMS:-1000}"
PROFILE="${PROFILE:-gpu-a100-llama8b}"
WORKLOADS="${WORKLOADS:-mixed sharegpt bfcl lats}"
for wl in $WORKLOADS; do
  autellix sim --workload "$wl" ${DATA:-} --policies fcfs-nocache,fcfs,mlfq,plas,atlas,srpt \
    --engines 1 --programs "$PROGRAMS" --seed 0 --profile "$PROFILE" --out "bench/sim/$wl"
done
python bench/sim/summarize.py bench/sim > bench/sim/summary.md
