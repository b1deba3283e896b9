"""Engine backends: `sim` (a clearly labelled simulated engine) and `vllm` (real vLLM V1).

Each backend module exposes `create(**options) -> Backend`. The engine service passes the common
options (`model`, `max_batch`, `max_model_len`) plus anything given as `--opt key=value`, so a
backend can grow options without touching the service. Modules are imported lazily: the engine
with `--backend sim` never imports vLLM.
"""

from __future__ import annotations

import importlib
from typing import Any

from autellix.backends.base import Backend

BACKENDS = ("sim", "vllm")


def create_backend(name: str, **options: Any) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    module = importlib.import_module(f"autellix.backends.{name}")
    return module.create(**options)
