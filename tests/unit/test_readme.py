"""The README starts with exactly two commands, and CI runs the second one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README must start with a bash block"
    assert text.index("```bash") < text.index("\n## "), "the commands come before any section"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_two_commands_demo_then_tests() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    assert "autellix demo" in commands[0]
    assert "[test]" in commands[1] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci


def test_readme_speaks_to_users() -> None:
    """No development history (that lives in the bench READMEs it links), and ratios that say
    which way they go: "1.19x higher", never "0.84x of FCFS" (which reads as better)."""
    text = (ROOT / "README.md").read_text()
    assert not re.search(r"\bsessions? \d", text, re.I), "development history in the README"
    assert not re.search(r"\bthe issue\b", text, re.I)
    below_one = re.findall(r"\b0\.\d+x", text)
    assert not below_one, f"ratios below 1 hide which way they go: {below_one}"
    assert "Compose v2" in text and "autellix up --backend vllm" in text
