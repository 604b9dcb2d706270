"""Every code block in the README and in docs/ runs.

* Each ```python block runs; the blocks of one page share a namespace and run in order, so a
  page can build on its earlier blocks (as a reader would in one interpreter).
* Each line of a ```bash block that runs an example or the explain walkthrough
  (``python examples/...``, ``python -m minicond.explain ...``, ``minicond explain ...``) runs
  as a command and must exit with status 0. Install and test commands (pip, pytest) are not
  run here.
* A block may be skipped only when it needs an optional package that is not installed: the
  line before its fence reads ``<!-- doc-test: requires torch -->`` (module names separated by
  commas), and the skip names the block and the missing module. Any other marker fails.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*doc-test:(.*?)-->")
REQUIRES = re.compile(r"^\s*requires\s+([\w.]+(?:\s*,\s*[\w.]+)*)\s*$")
RUNNABLE = ("python examples/", "python -m minicond.explain", "minicond explain")


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def blocks(page: Path) -> list[tuple[str, int, str, list[str]]]:
    """(language, line number, code, required modules) for each fenced block of ``page``."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        required: list[str] = []
        marker = MARKER.search(before)
        if marker:
            spec = REQUIRES.match(marker.group(1))
            if spec is None:
                raise AssertionError(f"{_page_id(page)}:{line}: unknown doc-test marker "
                                     f"{marker.group(0)!r}; only 'requires MODULE' may skip")
            required = [m.strip() for m in spec.group(1).split(",")]
        found.append((match.group(1), line, match.group(2), required))
    return found


def commands() -> list[tuple[str, str, list[str]]]:
    """(where, command, required modules) for every runnable line of every bash block."""
    out = []
    for page in PAGES:
        for lang, line, code, required in blocks(page):
            if lang not in ("bash", "sh", "shell", "console"):
                continue
            for k, text in enumerate(code.splitlines()):
                text = text.strip().removeprefix("$ ")
                if text.startswith(RUNNABLE):
                    out.append((f"{_page_id(page)}:{line + 1 + k}", text, required))
    return out


def _missing(modules: list[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


@pytest.mark.parametrize("page", [p for p in PAGES if any(b[0] == "python" for b in blocks(p))],
                         ids=_page_id)
def test_python_blocks_run(page: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)   # a block that writes a file writes it here
    namespace: dict = {"__name__": "__doc_block__"}
    for lang, line, code, required in blocks(page):
        if lang != "python":
            continue
        missing = _missing(required)
        if missing:
            pytest.skip(f"{_page_id(page)}:{line} and later blocks need the optional "
                        f"package(s) {', '.join(missing)}")
        exec(compile(code, f"{page}:{line}", "exec"), namespace)  # noqa: S102


def _argv(command: str) -> list[str]:
    argv = shlex.split(command)
    if argv[0] == "python":
        return [sys.executable] + argv[1:]
    # ``minicond`` is the console script; ``python -m minicond`` is the same entry point when
    # the script is not on PATH (an install without scripts, a plain checkout).
    script = shutil.which(argv[0])
    return [script] + argv[1:] if script else [sys.executable, "-m", "minicond"] + argv[1:]


@pytest.mark.parametrize("where,command,required", commands(),
                         ids=[w for w, *_ in commands()])
def test_bash_commands_run(where: str, command: str, required: list[str], tmp_path) -> None:
    missing = _missing(required)
    if missing:
        pytest.skip(f"{where} needs the optional package(s) {', '.join(missing)}")
    # Run from a scratch folder that sees the repository's examples/, so relative paths in
    # the command work and any file it writes lands in the scratch folder.
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(_argv(command), cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (f"{where}: `{command}` exited {result.returncode}\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def test_every_math_page_has_a_checked_block() -> None:
    pages = sorted((ROOT / "docs" / "math").glob("*.md"))
    assert pages, "docs/math has no pages"
    for page in pages:
        if page.name == "README.md":
            continue
        assert any(lang == "python" for lang, *_ in blocks(page)), \
            f"{_page_id(page)} has no python block checking its formulas"


def test_commands_are_found() -> None:
    found = [c for _, c, _ in commands()]
    assert "python examples/quickstart.py" in found, "the README's quickstart is not run"
    assert any(c.startswith("minicond explain") for c in found)


def test_marker_only_skips_for_missing_packages(tmp_path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- doc-test: requires torch, numpy -->\n```python\nx = 1\n```\n"
                    "<!-- doc-test: skip because slow -->\n```python\nx = 2\n```\n")
    with pytest.raises(AssertionError, match="unknown doc-test marker"):
        blocks(page)
    page.write_text("<!-- doc-test: requires torch, numpy -->\n```python\nx = 1\n```\n")
    assert blocks(page)[0][3] == ["torch", "numpy"]
    assert _missing(["numpy", "no_such_module_here"]) == ["no_such_module_here"]
