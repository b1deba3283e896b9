"""The gittins policy in the simulator: it learns online, exact hints bring it to the oracle,
class labels and hints reach it through `simulate` and `autellix sim`, and a run is
deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autellix.policy import get_policy
from autellix.sim import load_profile, simulate
from autellix.sim.core import Simulator
from autellix.sim.learning import assign_classes, noisy_hint
from autellix.workloads import load_workload
from autellix.workloads.arrivals import with_arrivals


@pytest.fixture(scope="module")
def overloaded() -> list:
    """120 mixed programs at ~2.5x the cpu-tiny engine's capacity (where order matters)."""
    wl = load_workload("mixed", 120, 3)
    return with_arrivals(wl.programs, 0.2, 3, "poisson", 3.0)


def _lpt(run) -> float:
    return float(np.mean([o.latency_per_token_s for o in run.programs]))


def test_exact_hints_reach_the_oracle_and_beat_no_hints(overloaded: list) -> None:
    srpt = _lpt(simulate(overloaded, policy="srpt"))
    blind = _lpt(simulate(overloaded, policy="gittins"))
    exact = _lpt(simulate(overloaded, policy="gittins", hints=0.0))
    assert exact < blind
    assert exact <= 1.15 * srpt, (exact, srpt)


def test_the_tables_are_learned_per_class_while_the_run_goes(overloaded: list) -> None:
    sim = Simulator(overloaded, get_policy("gittins"), load_profile("cpu-tiny"))
    before = sim.gtables
    assert before is not None and before.curves.keys() == {""}  # prior only
    sim.run()
    after = sim.gtables
    assert after is not None and after.version > before.version
    assert {"sharegpt", "bfcl", "lats"} <= set(after.curves)
    # tree searches are ranked far behind chat at the start of a program
    assert after.lookup("lats", 0.0).effective > 3 * after.lookup("bfcl", 0.0).effective


def test_class_modes_and_hints_change_only_gittins(overloaded: list) -> None:
    a = simulate(overloaded, policy="gittins", classes="none")
    b = simulate(overloaded, policy="gittins")
    assert _lpt(a) != _lpt(b)
    # other policies ignore labels and hints
    p1 = simulate(overloaded, policy="plas")
    p2 = simulate(overloaded, policy="plas", classes="shuffled", hints=0.5)
    assert _lpt(p1) == _lpt(p2)
    # deterministic
    assert _lpt(simulate(overloaded, policy="gittins", hints=0.5, seed=4)) == _lpt(
        simulate(overloaded, policy="gittins", hints=0.5, seed=4)
    )


def test_labels_and_noise_by_hand(overloaded: list) -> None:
    sim = Simulator(overloaded, get_policy("gittins"), load_profile("cpu-tiny"))
    assign_classes(sim.progs, "none", 0)
    assert {p.pclass for p in sim.progs} == {""}
    assign_classes(sim.progs, "shuffled", 0)
    assert {p.pclass for p in sim.progs} <= {"sharegpt", "bfcl", "lats"}
    with pytest.raises(ValueError, match="classes"):
        assign_classes(sim.progs, "random", 0)
    assert noisy_hint(400, 0.0, 1, 2) == 400.0
    noisy = [noisy_hint(400, 0.5, 1, uid) / 400 for uid in range(2000)]
    assert np.std(np.log(noisy)) == pytest.approx(0.5, rel=0.1)


def test_cli_passes_hints_classes_and_levels(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from autellix.cli.app import build_app

    out = tmp_path / "out"
    args = [
        "sim", "--workload", "mixed", "--policies", "fcfs,gittins", "--rates", "0.02,0.2",
        "--programs", "12", "--seed", "1", "--out", str(out), "--jobs", "1", "--no-extend",
        "--hints", "0.5", "--classes", "shuffled", "--levels", "10,20",
    ]  # fmt: skip
    res = CliRunner().invoke(build_app(), args)
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["sim_options"] == {"hints": 0.5, "classes": "shuffled"}
    assert set(data["sustainable"]["policies"]["gittins"]) == {"10", "20"}
    bad = CliRunner().invoke(build_app(), [*args[:-6], "--classes", "agents"])
    assert bad.exit_code == 2
    bad = CliRunner().invoke(build_app(), [*args[:-6], "--hints", "-1"])
    assert bad.exit_code == 2
