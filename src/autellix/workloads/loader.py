"""Build a named workload from `--data` files and/or the synthetic generators.

`sharegpt`/`bfcl`: from the given files of that format, else synthetic (said in `sources`).
`lats`: always synthetic (the paper's LATS traces are not public).
`mixed`: equal shares by program count (or `mix`) of sharegpt, bfcl and lats, each kind from its
files when given, else synthetic. Every program gets `arrival_s = 0`: arrivals are set per rate
by `arrivals.with_arrivals`, so one loaded workload serves a whole sweep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autellix.workloads.bfcl import load_bfcl, synthetic_bfcl
from autellix.workloads.detect import detect_format
from autellix.workloads.lats import synthetic_lats
from autellix.workloads.options import WorkloadOptions
from autellix.workloads.sharegpt import load_sharegpt, synthetic_sharegpt
from autellix.workloads.tokens import make_counter
from autellix.workloads.types import ProgramSpec

WORKLOADS = ("sharegpt", "bfcl", "lats", "mixed")
KINDS = ("sharegpt", "bfcl", "lats")


@dataclass(slots=True)
class Workload:
    """Programs (arrival 0, in arrival order) plus where each kind came from."""

    name: str
    programs: list[ProgramSpec]
    sources: dict[str, str]  # kind -> "file1.json, file2.json" or "synthetic"
    tokens: str  # how token counts were made
    options: WorkloadOptions = field(default_factory=WorkloadOptions)

    @property
    def synthetic(self) -> bool:
        """True when any kind was generated rather than loaded from a data file."""
        return any(s == "synthetic" for s in self.sources.values())

    def stats(self) -> dict[str, dict[str, float]]:
        """Per kind (and `all`): programs, calls/program, mean prompt/output tokens per call,
        max calls, threads — to compare with the paper's table."""
        out: dict[str, dict[str, float]] = {}
        groups: dict[str, list[ProgramSpec]] = {"all": self.programs}
        for p in self.programs:
            groups.setdefault(p.kind, []).append(p)
        for kind, progs in groups.items():
            calls = [c for p in progs for c in p.calls]
            n_calls = np.array([len(p.calls) for p in progs]) if progs else np.zeros(1)
            out[kind] = {
                "programs": len(progs),
                "calls_per_program": float(n_calls.mean()),
                "calls_per_program_p99": float(np.percentile(n_calls, 99)),
                "prompt_tokens_per_call": float(np.mean([c.prompt_tokens for c in calls]))
                if calls
                else 0.0,
                "output_tokens_per_call": float(np.mean([c.output_tokens for c in calls]))
                if calls
                else 0.0,
                "prefix_fraction": float(
                    sum(c.prefix_tokens for c in calls)
                    / max(1, sum(c.prompt_tokens for c in calls))
                ),
                "multi_threaded_fraction": float(np.mean([p.multi_threaded for p in progs]))
                if progs
                else 0.0,
            }
        return out


def classify_data(data: list[str | Path]) -> dict[str, list[Path]]:
    """Group `--data` files by detected format."""
    groups: dict[str, list[Path]] = {}
    for d in data:
        p = Path(d)
        if not p.is_file():
            raise FileNotFoundError(f"--data {p}: no such file")
        groups.setdefault(detect_format(p), []).append(p)
    return groups


def _split(n: int, weights: dict[str, float]) -> dict[str, int]:
    """`n` programs split by weights, remainders to the largest fractional parts (kinds order)."""
    total = sum(weights.values())
    raw = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    rest = n - sum(counts.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), KINDS.index(k)))[:rest]:
        counts[k] += 1
    return counts


def load_workload(
    name: str,
    n: int,
    seed: int,
    data: list[str | Path] | None = None,
    tokenizer: str | Path | None = None,
    options: WorkloadOptions | None = None,
    mix: dict[str, float] | None = None,
    sample_method: str = "reservoir",
) -> Workload:
    """The `n`-program workload `name`, deterministic for (`seed`, files, options).

    A tokenizer.json among `data` is used as the tokenizer when `tokenizer` is not given.
    """
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}: one of {WORKLOADS}")
    opts = options or WorkloadOptions()
    groups = classify_data(list(data or []))
    tok = tokenizer or (groups["tokenizer"][0] if groups.get("tokenizer") else None)
    counter = make_counter(tok)
    kinds = dict.fromkeys(KINDS, 0.0)
    if name == "mixed":
        kinds.update(mix or {k: 1.0 for k in KINDS})
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown kinds in mix: {sorted(unknown)}")
    else:
        kinds[name] = 1.0
        foreign = set(groups) - {name, "tokenizer"}
        if foreign:
            raise ValueError(
                f"--workload {name} got data files of format {sorted(foreign)}; use --workload "
                "mixed to blend formats"
            )
    counts = _split(n, {k: w for k, w in kinds.items() if w > 0})
    progs: list[ProgramSpec] = []
    sources: dict[str, str] = {}
    for kind, count in counts.items():
        # one independent stream per kind: adding a kind never changes another kind's programs
        rng = np.random.default_rng([seed, KINDS.index(kind)])
        files = groups.get(kind, [])
        if kind == "sharegpt" and files:
            got = load_sharegpt(list(files), count, rng, counter, opts, sample_method)
        elif kind == "bfcl" and files:
            got = load_bfcl(list(files), count, rng, counter, opts, sample_method)
        elif kind == "sharegpt":
            got = synthetic_sharegpt(count, rng, opts)
        elif kind == "bfcl":
            got = synthetic_bfcl(count, rng, opts)
        else:
            got = synthetic_lats(count, rng, opts)
        sources[kind] = ", ".join(f.name for f in files) if files else "synthetic"
        progs.extend(got)
    order = np.random.default_rng([seed, 99]).permutation(len(progs))
    programs = [progs[i] for i in order]
    uses_text = any(s != "synthetic" for s in sources.values())
    return Workload(name, programs, sources, counter.name if uses_text else "synthetic", opts)
