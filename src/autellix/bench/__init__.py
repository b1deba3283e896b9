"""Benchmarks against the live stack (`autellix bench live | overhead | scaling`).

The engines are SIMULATED (the `sim` engine backend) unless `bench live --backend vllm` runs a
REAL vLLM engine; the frontend, schedulers, NATS and Postgres are real processes. Modules, one
job each:

- `engine`:   the sim engine's timing flags and the simulator profile that models them
- `workload`: program sizes scaled down for real-time replay
- `stack`:    servers for a benchmark and a fresh deployment per run (policy as scheduler flags)
- `probe`:    control-plane delay and real step time, measured before loading the stack
- `live`:     one (policy, rate) run -> a results.json record (+ the simulator's prediction)
- `suite`:    `bench live` end to end (probe, rates, runs, summaries)
- `compare`:  live vs simulated agreement, policy vs baseline ratios
- `report`:   Markdown, PNG and console output
- `dbstats`:  what a run left in Postgres (engine busy time, preemptions, decisions)
- `overhead`: `bench overhead` (per-call latency, scheduler decisions per second)
- `scaling`:  `bench scaling` (1..8 engines, 1..2 scheduler replicas)
- `plain_vllm`: plain-vLLM baselines (vllm-fcfs, vllm-priority) and the vLLM engine settings
- `vllm_suite`: `bench live --backend vllm` (probe, runs, report: Autellix vs plain vLLM)
"""
