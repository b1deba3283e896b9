"""The dashboard's built page (src/autellix/ui_static/, committed) matches its sources in ui/,
and the page references only files the frontend serves.

Why: `pip install .` ships the committed build and never runs npm, so a change to ui/ that was
not rebuilt would silently never reach users. `ui/build.mjs` records a hash of the sources it
built from; this recomputes it the same way.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "ui"
STATIC = ROOT / "src" / "autellix" / "ui_static"


def sources_hash() -> str:
    names = ["build.mjs", "index.html", "package.json", "package-lock.json"]
    names += [str(p.relative_to(UI)) for p in (UI / "src").rglob("*") if p.is_file()]
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(f"{name}\0".encode())
        digest.update((UI / name).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def test_the_committed_build_is_built_from_the_current_sources() -> None:
    recorded = (STATIC / "SOURCES.sha256").read_text().strip()
    assert recorded == sources_hash(), "ui/ changed since the last build: cd ui && npm run build"
    assert (STATIC / "index.html").read_bytes() == (UI / "index.html").read_bytes()


def test_the_page_loads_only_built_assets_and_nothing_from_the_network() -> None:
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(refs) == ["assets/dashboard.css", "assets/dashboard.js"]
    for ref in refs:
        assert (STATIC / ref).is_file()
    script = (STATIC / "assets" / "dashboard.js").read_text()
    assert "cdn." not in script and "unpkg.com" not in script
