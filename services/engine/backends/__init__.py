"""Engine backends: `sim` (a clearly labelled simulated engine) and `vllm` (real vLLM V1)."""
