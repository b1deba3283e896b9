"""Reading the provisioned Grafana dashboard: its panels' PromQL, the metric names it uses.

Shared by `tests/unit/test_grafana_dashboard.py` (structure, no servers) and
`tests/stack/test_prometheus.py` (every query against a real Prometheus scraping real services).
Grafana is not installed where the tests run, so the queries are checked the way Grafana would
send them: with its interval variables replaced by a concrete range.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "autellix.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"

# the Grafana variables a query may use, and what the tests put in their place
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}

_FUNCTIONS_AND_KEYWORDS = frozenset(
    "by without on ignoring group_left group_right bool and or unless offset inf nan".split()
)


@dataclass(frozen=True)
class Target:
    panel: str
    ref_id: str
    expr: str  # as stored (Grafana variables included)
    legend: str
    datasource: dict[str, Any]

    @property
    def promql(self) -> str:
        """The expression with Grafana's variables replaced (what Prometheus receives)."""
        out = self.expr
        for name, value in GRAFANA_VARIABLES.items():
            out = out.replace(name, value)
        return out

    @property
    def legend_labels(self) -> set[str]:
        """Labels the legend shows (`{{label}}`): each result series must carry them."""
        return set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", self.legend))


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that is not a row, including those inside collapsed rows."""
    out: list[dict[str, Any]] = []
    for p in dashboard["panels"]:
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def targets(dashboard: dict[str, Any]) -> list[Target]:
    return [
        Target(p["title"], t["refId"], t["expr"], t.get("legendFormat", ""), t["datasource"])
        for p in panels(dashboard)
        for t in p["targets"]
    ]


def metric_names(promql: str) -> set[str]:
    """The metric names an expression reads: identifiers that are not function calls, keywords,
    label names (in `by (...)`, `{...}` matchers) or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", promql)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[m.end() :].lstrip()
        if rest.startswith("(") or m.group() in _FUNCTIONS_AND_KEYWORDS:
            continue
        names.add(m.group())
    return names
