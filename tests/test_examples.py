"""Each script in examples/ runs as a smoke test and prints its verdict.

A script checks its own claim (an identity, a gradient) with an ``assert`` and prints a final
``verdict:`` line only when the claim held; the test runs it in a fresh interpreter and
requires exit status 0 and that line.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# script -> (the line its success prints, optional packages it imports)
VERDICTS = {
    "quickstart.py": ("gradient check passed", ()),
    "moe_identity.py": ("verdict: CondConv equals the mixture of its experts' convolutions", ()),
    "routing_gradient.py": ("verdict: the hand-derived routing gradient matches autograd and "
                            "finite differences", ()),
    "custom_op.py": ("verdict: the new op's forward and backward are correct", ("hypothesis",)),
}


def test_every_example_has_a_verdict() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert set(VERDICTS) <= scripts, f"missing examples: {set(VERDICTS) - scripts}"


@pytest.mark.parametrize("script", sorted(VERDICTS))
def test_example_runs_and_prints_its_verdict(script: str, tmp_path) -> None:
    verdict, needs = VERDICTS[script]
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{script} needs the optional package(s) {', '.join(missing)}")
    result = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    assert verdict in result.stdout.splitlines()[-1], \
        f"{script} did not end with its verdict:\n{result.stdout}"


def test_custom_model_example_runs_shortened(tmp_path) -> None:
    """examples/custom_model.py trains for about a minute; here for 20 steps, which already
    gains more than the 1 dB its own check asks for."""
    result = subprocess.run([sys.executable, str(EXAMPLES / "custom_model.py"), "--steps", "20"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"custom_model.py failed:\n{result.stdout}\n{result.stderr}"
    assert "verdict: the custom CondConv U-Net raises PSNR by" in result.stdout.splitlines()[-1]
