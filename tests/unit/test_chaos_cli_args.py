"""`autellix chaos` refuses at once what it could only fail at after its faults and soak."""

from __future__ import annotations

import importlib.util

import pytest
import typer

from autellix.cli.chaos import require_fuzz_dependencies


def test_a_fuzz_without_hypothesis_is_refused_up_front(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    require_fuzz_dependencies()  # installed here: nothing to say
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "hypothesis" else real(name)
    )
    with pytest.raises(typer.BadParameter, match="--fuzz-cases 0"):
        require_fuzz_dependencies()
