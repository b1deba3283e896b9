"""SIMULATED ablations (`autellix bench ablations`): where the gain comes from, preemption,
anti-starvation and the p99 bound, quanta, ATLAS vs PLAS, and load balancing over 1-8 engines.

Each *set* runs labelled policy variants (`SweepConfig.variants`) over one fixed list of rates
(multiples of the workload's estimated capacity, the same for every variant) and writes
`<out>/<set>.json`, `<set>.simulated.md` and `<set>.simulated.png` (the `balance-<n>` sets also
`balancer.*`, combined over engine counts). Nothing here is tuned: every variant changes one
policy knob of the registry defaults, on the same workload, arrivals and engine profile as the
main sweeps.

Split by job: `sets` (what is compared), `sweep` (running one set), `report` (its Markdown and
plot), `balancer` (the summary over engine counts), `run` (the command: sets in, files out).
"""
