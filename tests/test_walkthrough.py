"""docs/walkthrough.py runs end to end as a plain script.

Every by-hand result in it is asserted against minicond (routing, mixed kernels, the im2col
convolution, each gradient of the backward pass), so a run that exits with status 0 means
they all still agree. Its training part is capped at a few steps here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "walkthrough.py"


def test_walkthrough_runs_as_a_script(tmp_path: Path) -> None:
    env = {**os.environ, "MINICOND_WALKTHROUGH_STEPS": "20",
           "MINICOND_WALKTHROUGH_OUT": str(tmp_path), "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for check in ("routing weights r", "output y", "g Theta (experts)", "g R (router weight)",
                  "g x = conv path + routing path", "mean routing weight per class"):
        assert check in done.stdout, f"walkthrough printed no line {check!r}"
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "walkthrough_routing.png").stat().st_size > 0


def test_walkthrough_is_a_jupytext_percent_notebook() -> None:
    text = SCRIPT.read_text(encoding="utf-8")
    assert "format_name: percent" in text
    cells = [line for line in text.splitlines() if line.startswith("# %%")]
    assert sum(c.startswith("# %% [markdown]") for c in cells) >= 6
    assert sum(c == "# %%" for c in cells) >= 6
