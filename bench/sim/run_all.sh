#!/usr/bin/env bash
# SIMULATED sweeps behind bench/README.md: the four workloads of issue 4, every policy, one engine,
# on both engine profiles: the published A100 / Llama-3.1-8B profile (results in bench/sim/<wl>/)
# and the cpu-tiny profile measured from the real vLLM CPU engine (bench/sim/cpu-tiny/<wl>/).
# Then the ablations (bench/sim/ablations/<profile>/) and the summary.
# Without --data the ShareGPT and BFCL kinds are synthetic (no public data on this machine); pass
# e.g. DATA="--data ShareGPT_V3_unfiltered_cleaned_split.json --data BFCL_v3_multi_turn_base.json".
set -euo pipefail
cd "$(dirname "$0")/../.."
PROGRAMS="${PROGRAMS:-1000}"
PROFILES="${PROFILES:-gpu-a100-llama8b cpu-tiny}"
WORKLOADS="${WORKLOADS:-mixed sharegpt bfcl lats}"
for profile in $PROFILES; do
  for wl in $WORKLOADS; do
    if [ "$profile" = gpu-a100-llama8b ]; then out="bench/sim/$wl"; else out="bench/sim/$profile/$wl"; fi
    nice autellix sim --workload "$wl" ${DATA:-} --policies fcfs-nocache,fcfs,mlfq,plas,atlas,srpt \
      --engines 1 --programs "$PROGRAMS" --seed 0 --profile "$profile" --out "$out"
  done
done
if [ -z "${SKIP_ABLATIONS:-}" ]; then
  nice python bench/sim/ablations.py --profile gpu-a100-llama8b
  nice python bench/sim/ablations.py --profile cpu-tiny --only decomposition,preemption
fi
python bench/sim/summarize.py bench/sim > bench/sim/summary.md
