"""CI runs the README's install-and-run and install-and-test commands exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    install = readme.split("## Install", 1)[1].split("## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", install, re.S)
    assert block is not None, "README's Install section has no bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readme_commands_as_written():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    assert any("pytest" in c for c in commands) and any("minicond train" in c for c in commands)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert command in ci_lines, f".ci/run does not run the README's {command!r} as written"


def test_ci_installs_the_pinned_torch_first():
    ci = (ROOT / ".ci" / "run").read_text()
    pin = re.search(r'"torch==([\d.]+)"', ci)
    assert pin is not None, ".ci/run does not install a pinned torch"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"torch=={pin.group(1)}"' in pyproject, "the test extra pins another torch"
    first_readme_command = ci.index(_readme_commands()[0])
    assert ci.index(pin.group(0)) < first_readme_command
    assert f"torch=={pin.group(1)}" in (ROOT / "README.md").read_text()
