"""The provisioned Grafana dashboard, read without Grafana: its structure, its data source, the
panels the Autellix dashboard must have, and the PromQL helper the Prometheus test relies on.

Grafana is not installable where the tests run; `tests/stack/test_prometheus.py` sends every
query here to a real Prometheus scraping real services.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from grafana_dashboard import (
    DASHBOARD,
    DATASOURCES,
    GRAFANA_VARIABLES,
    ROOT,
    load_dashboard,
    metric_names,
    panels,
    targets,
)

# metrics the dashboard must read: one per panel the issue names, vLLM's panels where they apply
REQUIRED_METRICS = {
    "autellix_program_duration_seconds_bucket": "program latency percentiles",
    "autellix_program_latency_per_token_seconds_bucket": "latency-per-token percentiles",
    "gen_ai_server_time_to_first_token_seconds_bucket": "time to first token",
    "gen_ai_server_request_duration_seconds_bucket": "call (end-to-end request) latency",
    "gen_ai_server_time_per_output_token_seconds_bucket": "time per output token",
    "autellix_engine_queue_depth": "queue depth per level",
    "autellix_engine_preemptions_total": "preemptions/s",
    "autellix_engine_running": "batch occupancy (running)",
    "autellix_engine_batch_capacity": "batch occupancy (capacity)",
    "autellix_engine_prefix_cache_hits_total": "prefix-cache hit rate (hits)",
    "autellix_engine_prefix_cache_queries_total": "prefix-cache hit rate (queries)",
    "autellix_scheduler_decisions_total": "scheduler decisions/s",
    "autellix_calls_failed_total": "failed calls",
    "autellix_scheduler_requeued_calls_total": "calls lost with an engine",
    "autellix_engine_output_tokens_total": "token throughput",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    (ds,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return dict(ds)


def test_dashboard_is_a_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "autellix" and dashboard["title"]
    assert dashboard["schemaVersion"] >= 36  # Grafana 9 and later (the compose image is 11)
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    ids = [p["id"] for p in rows] + [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(dashboard):
        assert p["type"] == "timeseries" and p["title"] and p["description"], p.get("title")
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        assert p["targets"], p["title"]
        assert p["fieldConfig"]["defaults"]["unit"], p["title"]


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_every_query_uses_the_provisioned_prometheus(
    dashboard: dict[str, Any], datasource: dict[str, Any]
) -> None:
    assert datasource["type"] == "prometheus"
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert datasource["url"] == f"http://prometheus:{port}"
    for p in panels(dashboard):
        assert p["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, p["title"]
    for t in targets(dashboard):
        assert t.datasource == {"type": "prometheus", "uid": datasource["uid"]}, t.panel


def test_queries_use_only_variables_the_tests_can_fill(dashboard: dict[str, Any]) -> None:
    for t in targets(dashboard):
        assert "$" not in t.promql, f"{t.panel}: unknown Grafana variable in {t.expr}"
    assert set(GRAFANA_VARIABLES) >= {"$__rate_interval"}


def test_dashboard_shows_every_panel_the_issue_names(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(t.promql) for t in targets(dashboard)))
    missing = {name: why for name, why in REQUIRED_METRICS.items() if name not in used}
    assert not missing, missing


def test_grafana_provisioning_loads_the_dashboard_file() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    # host path -> container path, for the bind mounts of files in the repository
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    dashboards_dir = mounts["./deploy/grafana/dashboards"]
    assert (ROOT / "deploy/grafana/dashboards" / DASHBOARD.name).is_file()
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/autellix.yaml").read_text()
    )["providers"][0]
    assert provider["options"]["path"] == dashboards_dir
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


@pytest.mark.parametrize(
    ("promql", "names"),
    [
        (
            'histogram_quantile(0.9, sum by (le) (rate(a_seconds_bucket{job="x"}[30s])))',
            {"a_seconds_bucket"},
        ),
        ("sum by (engine) (running) / sum by (engine) (capacity)", {"running", "capacity"}),
        ("sum without (instance) (rate(x_total[1m])) > bool 0", {"x_total"}),
        ('up{job=~"autellix-.*"}', {"up"}),
    ],
)
def test_metric_names_reads_what_an_expression_selects(promql: str, names: set[str]) -> None:
    assert metric_names(promql) == names
