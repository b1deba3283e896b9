"""Property-based fuzzing of every NATS subject the services accept, as a hostile peer would
send it (`autellix.bench.chaos_fuzz`: Hypothesis cases from each message's JSON Schema, right
and wrong, plus arbitrary and broken bytes).

Every request gets its typed reply or a typed error, never `internal`; an accepted call ends
with its final or a typed error; afterwards every service is still running and answers good
requests, and no service logged a traceback. A valid call naming a model no engine serves is
answered `no_engine` after the scheduler's `--no-engine-timeout` (4 s here, not 60). CI runs a
few hundred cases; `AUTELLIX_FUZZ_CASES` raises it (`autellix chaos --fuzz-cases N` runs the
same fuzz against a stack of your own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import jsonschema
import nats
import pytest
import pytest_asyncio
from hypothesis import given
from pydantic import BaseModel
from svc_stack import Stack

from autellix.bench.chaos_fuzz import fuzz, still_serving, targets
from autellix.bench.chaos_strategies import from_model_schema, fuzz_settings
from autellix.wire.protocol import Subjects

ENGINE = "fuzz-e1"
CASES = int(os.environ.get("AUTELLIX_FUZZ_CASES", "360"))


@pytest_asyncio.fixture(scope="module")
async def stack(new_stack: Callable[[], Stack]) -> AsyncIterator[Stack]:
    s = new_stack()
    s.start("frontend", "frontend")
    # calls for a model no engine serves are answered no_engine after this (default 60 s)
    s.start("scheduler", "scheduler", "--no-engine-timeout", "4")
    s.start_engine(ENGINE, "--max-model-len", "2048")
    async with s.running():
        yield s


@pytest.mark.parametrize("model", [t.model for t in targets(Subjects("x"), "e")])
def test_uncorrupted_cases_conform_to_the_schema(model: type[BaseModel]) -> None:
    """The walker's rate-0 values are instances of the message's JSON Schema (so the wrong
    ones are wrong by design, not by a walker bug)."""
    schema = model.model_json_schema()
    validator = jsonschema.Draft202012Validator(schema, format_checker=None)

    @fuzz_settings(40)
    @given(from_model_schema(schema, rates=(0.0,)))
    def conforms(value: object) -> None:
        errors = [e.message for e in validator.iter_errors(value)]
        assert errors == [], (value, errors)

    conforms()


def tracebacks(log: str) -> list[str]:
    """Log lines that carry a traceback: a logged exception, or Python's own report."""
    return [
        line
        for line in log.splitlines()
        if "Traceback (most recent call last)" in line or '"exception":' in line
    ]


async def test_every_subject_answers_fuzz_with_typed_replies(stack: Stack) -> None:
    nc = await nats.connect(stack.settings.nats_url)
    try:
        report = await fuzz(
            nc,
            stack.subjects,
            ENGINE,
            CASES,
            rng_seed=int(os.environ.get("AUTELLIX_FUZZ_SEED", "13")),
        )
        print(json.dumps(report.summary()), report.per_subject)
        assert report.cases >= CASES * 0.9
        assert report.crashes == 0 and report.internal_errors == 0, json.dumps(
            report.failures, indent=1
        )
        assert await still_serving(nc, stack.subjects) == []
    finally:
        await nc.close()
    assert stack.group.running() == stack.group.names
    for name in stack.group.names:
        assert tracebacks(stack.logs(name)) == [], (name, tracebacks(stack.logs(name))[:3])


def test_autellix_chaos_writes_the_fuzz_counts(stack: Stack, tmp_path: Path) -> None:
    """`autellix chaos --fuzz-cases N` runs the same fuzz against a stack it is pointed at."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "autellix.cli",
            "chaos",
            "--out",
            str(tmp_path),
            "--fuzz-cases",
            "60",
            "--nats-url",
            stack.settings.nats_url,
            "--namespace",
            stack.settings.namespace,
            "--timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads((tmp_path / "chaos.json").read_text())
    assert result["fuzz"]["cases"] >= 50
    assert result["fuzz"]["crashes"] == result["fuzz"]["internal_errors"] == 0
    assert result["still_serving"] and result["engine_id"] == ENGINE
