"""`fmt_s`: every time in a CLI table carries its unit ("3.1 ms", never a bare "3.1m")."""

from __future__ import annotations

from autellix.bench.reporting import fmt_s


def test_fmt_s_names_its_unit() -> None:
    cases = {
        0.00042: "0.42 ms",
        0.0031: "3.1 ms",
        0.0123: "12 ms",
        0.9996: "1.00 s",
        1.234: "1.23 s",
        63.3: "63.3 s",
        1250.0: "1250 s",
    }
    assert {s: fmt_s(s) for s in cases} == cases
    assert fmt_s(None) == fmt_s(float("nan")) == "-"
