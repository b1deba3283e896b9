"""Export the wire protocol's JSON Schemas to `docs/schemas/` (one file per message).

Run `python -m autellix.wire.schema_export docs/schemas`; `tests/unit/test_docs_schemas.py` fails
when the committed files differ from the code, so the published schemas cannot drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from autellix.wire.protocol import json_schemas


def render() -> dict[str, str]:
    """File name → JSON text for every public message schema."""
    return {
        f"{name}.schema.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in json_schemas().items()
    }


def export(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")
    for p in export(target):
        print(p)
