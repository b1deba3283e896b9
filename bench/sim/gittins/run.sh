#!/usr/bin/env bash
# SIMULATED results of bench/sim/gittins/README.md: the gittins policy against fcfs, mlfq, plas,
# atlas and the srpt oracle, 1,000 programs, one cpu-tiny engine; the mix with size hints
# (--hints 0.5) and with class labels absent and shuffled. Rates are fixed multiples of each
# workload's analytic capacity (0.1x for the light-load reference, then 0.6x..5.5x), read at
# m = 10 and 20; summarize.py writes summary.md and summary.png. The README says which of these
# sweeps have been run.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PROGRAMS="${PROGRAMS:-1000}"
SEEDS="${SEEDS:-7 11}"
JOBS="${JOBS:-2}"
OUT=bench/sim/gittins
FULL="0.1 0.6 1.0 1.4 2.0 2.8 4.0 5.5"
HINTED="0.1 1.0 1.4 2.0 2.8 4.0"
rates() {  # comma-separated rates for workload $1, seed $2, multiples $3 of its capacity
  python - "$1" "$2" "$PROGRAMS" "$3" <<'PY'
import sys
from autellix.sim import load_profile
from autellix.sim.sweep import analytic_capacity
from autellix.workloads import load_workload
wl, seed, n, xs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
cap = analytic_capacity(load_workload(wl, n, seed).programs, load_profile("cpu-tiny"))
print(",".join(f"{cap * float(x):.4g}" for x in xs))
PY
}
sim() {  # workload seed out policies multiples [extra flags]
  local wl=$1 seed=$2 out=$3 pols=$4 xs=$5; shift 5
  nice autellix sim --workload "$wl" --programs "$PROGRAMS" --seed "$seed" --policies "$pols" \
    --rates "$(rates "$wl" "$seed" "$xs")" --no-extend --levels 10,20 --jobs "$JOBS" \
    --out "$OUT/$out" "$@"
}
ALL=fcfs,mlfq,plas,atlas,gittins,srpt
for seed in $SEEDS; do
  sim mixed "$seed" "mixed-s$seed" "$ALL" "$FULL"
  sim mixed "$seed" "mixed-hints0.5-s$seed" fcfs,plas,gittins,srpt "$HINTED" --hints 0.5
  for wl in bfcl sharegpt lats; do sim "$wl" "$seed" "$wl-s$seed" "$ALL" "$FULL"; done
done
seed="${SEEDS%% *}"
for mode in none shuffled; do  # the same two rates as 1.4x and 2x of the mix above
  sim mixed "$seed" "mixed-classes-$mode-s$seed-at-1.4x-2x" gittins "1.4 2.0" --classes "$mode"
done
python "$OUT/summarize.py" "$OUT"
