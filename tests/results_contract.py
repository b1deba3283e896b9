"""The per-run keys every sweep's results.json carries (`autellix sim`, `autellix bench live`
with simulated or vLLM engines): one list, so the tests of each check the same contract.
"""

from __future__ import annotations

#: latency and throughput of one (policy, rate) run
LATENCY_KEYS = (
    "avg_latency_s",
    "p50_latency_s",
    "p95_latency_s",
    "p99_latency_s",
    "avg_latency_per_token_s",
    "p99_latency_per_token_s",
    "throughput_programs_per_s",
)
#: what identifies a run and what it cost, besides its latencies
RUN_KEYS = ("workload", "policy", "rate", "programs", "preemptions", "engine_utilization")
