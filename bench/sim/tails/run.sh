#!/usr/bin/env bash
# SIMULATED results of bench/sim/tails/README.md: p99 program latency at 1.2x FCFS's saturation
# rate, 1,000 programs, one cpu-tiny engine, seeds 7 and 11, workloads mixed, sharegpt and bfcl.
# FCFS's saturation rate is its sustainable rate at m = 10 in bench/sim/gittins (same programs,
# seeds and profile). Each workload runs fcfs,plas,atlas,gittins,srpt without a guard, then
# plas,atlas,gittins with the age guard (--option age_s=A) and the slowdown guard
# (--option slowdown=S) at the same rate; summarize.py writes summary.md/json/png.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=bench/sim/tails
PROGRAMS="${PROGRAMS:-1000}"
AGES="${AGES:-300 600 1200}"
SLOWDOWNS="${SLOWDOWNS:-5}"
# workload seed rate (1.2 x fcfs's m=10 sustainable rate in bench/sim/gittins/summary.md)
RUNS=(
  "mixed 7 0.06708" "mixed 11 0.06638"
  "sharegpt 7 0.09600" "sharegpt 11 0.10728"
  "bfcl 7 0.6510" "bfcl 11 0.7098"
)
sim() {  # workload seed rate out policies [extra flags]
  local wl=$1 seed=$2 rate=$3 out=$4 pols=$5; shift 5
  nice autellix sim --workload "$wl" --programs "$PROGRAMS" --seed "$seed" --policies "$pols" \
    --rates "$rate" --no-extend --levels 10 --jobs 2 --out "$OUT/$wl-s$seed/$out" "$@"
}
for r in "${RUNS[@]}"; do
  read -r wl seed rate <<<"$r"
  sim "$wl" "$seed" "$rate" none fcfs,plas,atlas,gittins,srpt
  for a in $AGES; do sim "$wl" "$seed" "$rate" "age$a" plas,atlas,gittins --option "age_s=$a"; done
  for s in $SLOWDOWNS; do
    sim "$wl" "$seed" "$rate" "slowdown$s" plas,atlas,gittins --option "slowdown=$s"
  done
done
python "$OUT/summarize.py" "$OUT"
