"""Smoke test: the quickstart runs and its gradient check passes."""

import runpy
from pathlib import Path


def test_quickstart_runs(capsys):
    runpy.run_path(str(Path(__file__).parents[1] / "examples" / "quickstart.py"))
    assert "gradient check passed" in capsys.readouterr().out
