"""What every benchmark and simulator report is made of: Markdown tables, percentiles, the
machine's load average, results JSON, plot files and console tables.

One place, so that `autellix bench ...` and `autellix sim` format a table, compute a p99 or read
a results.json the same way (they are compared side by side). Light at import time: numpy,
matplotlib and rich are imported by the function that needs them, so a CLI module can import
this without slowing `autellix --help`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub Markdown table (header, separator, one line per row)."""
    return "\n".join(md_table_lines(header, rows))


def md_table_lines(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """`md_table` as a list of lines, for reports built line by line."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def pct(xs: Sequence[float] | Any, q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between the closest ranks (numpy's
    default), NaN for no values: a missing tail is "-" in a table, not an error."""
    if len(xs) == 0:
        return float("nan")
    import numpy as np

    return float(np.percentile(xs, q))


def load_avg() -> float:
    """The 1-minute load average, NaN where the platform has none. Every run records it because
    timings on a shared host stretch once it exceeds the number of CPUs."""
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


def machine() -> str:
    """Architecture, CPU count and OS of this host, for a results file's `meta`."""
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def command_line() -> str:
    """The command this process runs, for a results file's `meta` ("autellix bench ..." also
    when started as `python -m autellix.cli`), so a result says how to reproduce it."""
    name = Path(sys.argv[0]).name
    return " ".join(["autellix" if name == "__main__.py" else name, *sys.argv[1:]])


def fmt(x: Any, spec: str = ".4g") -> str:
    """A number for a table cell; "-" for a missing or non-finite one."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def fmt_s(seconds: float | None) -> str:
    """A duration with its unit, so that no reader takes milliseconds for minutes: "0.42 ms",
    "3.1 ms", "250 ms", "1.23 s", "63.3 s", "1250 s"; "-" for a missing or non-finite one."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    ms = seconds * 1000.0
    if abs(ms) < 1:
        return f"{ms:.2g} ms"
    if abs(round(ms, 1)) < 10:
        return f"{ms:.1f} ms"
    if abs(round(ms)) < 1000:
        return f"{ms:.0f} ms"
    if abs(round(seconds, 2)) < 10:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s" if abs(round(seconds, 1)) < 1000 else f"{seconds:.0f} s"


def fmt_x(v: float | None) -> str:
    """A ratio as `1.23x`; "-" when there is none."""
    return "-" if v is None else f"{v:.2f}x"


def read_json(path: Path) -> dict[str, Any]:
    """A results.json (or any JSON object a benchmark wrote), NaN and Infinity included."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only: benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Write a figure (making its folder) and free it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def rate_axes(ax: Any, ylabel: str) -> None:
    """Finish a latency-against-arrival-rate panel: both axes logarithmic (rates and latencies
    span decades), labelled, gridded."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("program arrival rate (programs/s)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def write_report_files(
    out: Path,
    payload: dict[str, Any],
    *,
    png: str,
    md: str,
    plot: Callable[[dict[str, Any], Path], None],
    markdown: Callable[[dict[str, Any]], str],
) -> dict[str, Path]:
    """One benchmark's outputs in `out`: results.json (the payload), the plot `png` and the
    Markdown report `md`, written in that order; returns their paths (keys json, png, md)."""
    from autellix.sim.report import write_json

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "png": out / png, "md": out / md}
    write_json(paths["json"], payload)
    plot(payload, paths["png"])
    paths["md"].write_text(markdown(payload))
    return paths


def rich_table(
    title: str,
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    left: Sequence[str] = ("policy",),
) -> Any:
    """A rich console table: the columns named in `left` left-aligned, numbers right-aligned."""
    from rich.table import Table

    t = Table(title=title)
    for h in header:
        t.add_column(h, justify="left" if h in left else "right")
    for row in rows:
        t.add_row(*row)
    return t
