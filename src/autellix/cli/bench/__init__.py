"""`autellix bench`: benchmarks against the live stack (`live`, `overhead`, `scaling`,
`cluster`, `floor`, `resume`, `calibrate`, `report`), on the simulator (`ablations`,
`sim-summary`) and of one piece of the engine (`textout`).

One module per sub-command, each holding that command's options; what several share (the sim
engine's timing flags, list parsers, the console) is `options`. The benchmarks themselves are
the `autellix.bench` package.
"""

from __future__ import annotations

import typer

from autellix.cli.bench import (
    ablations,
    calibrate,
    cluster,
    floor,
    live,
    overhead,
    report,
    resume,
    scaling,
    sim_summary,
    textout,
)

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks on the live stack (SIMULATED engines, or REAL vLLM with `live --backend "
    "vllm`): live, overhead, scaling; SIMULATED ablations and their summary; textout.",
    no_args_is_help=True,
)
bench_app.command("live")(live.live)
bench_app.command("overhead")(overhead.overhead)
bench_app.command("scaling")(scaling.scaling)
bench_app.command("cluster")(cluster.cluster)
bench_app.command("floor")(floor.floor)
bench_app.command("resume")(resume.resume)
bench_app.command("calibrate")(calibrate.calibrate)
bench_app.command("report")(report.report)
bench_app.command("ablations")(ablations.ablations)
bench_app.command("sim-summary")(sim_summary.sim_summary)
bench_app.command("textout")(textout.textout)


def register(app: typer.Typer) -> None:
    """Add `autellix bench` (live, overhead, scaling, floor, resume, calibrate, report,
    ablations, sim-summary, textout) to the CLI."""
    app.add_typer(bench_app, name="bench")
