"""The explain walkthrough: every step present and in order, every check passing on drawn
configurations and backends, checks that can fail, Markdown output, --step, --only, --graph,
the slices printed beside summaries, the command line, and the step table against
docs/code_tour.md."""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import fixture_settings

from minicond.backends.table import KERNELS
from minicond.explain import (
    STEP_TABLE,
    Agreement,
    code_tour_rows,
    explain,
    finite_difference_check,
    main,
    register,
)

ROOT = Path(__file__).resolve().parent.parent

FORWARD = ["global average pool", "routing logits", "routing weights", "mixed kernel",
           "convolution as im2col + GEMM", "loss"]
BACKWARD = ["∂L/∂y and the bias", "weight gradient of the mixed kernel",
            "gradient to each expert", "gradient to the routing weights", "through the",
            "the router's linear layer", "through the pool", "the input gradient"]


def _assert_all_checks_pass(walk) -> None:
    failed = [c.describe() for s in walk.steps for c in s.checks if not c.passed]
    failed += [a.describe() for s in walk.steps for a in s.agreements if not a.passed]
    failed += [a.describe() for a in walk.autograd if not a.passed]
    assert not failed, "\n".join(failed)
    assert walk.passed


def test_steps_in_order_with_formula_shapes_values_and_a_check() -> None:
    out = io.StringIO()
    walk = explain(file=out)
    titles = [s.title for s in walk.steps]
    assert len(titles) == len(FORWARD) + len(BACKWARD)
    for title, expected in zip(titles, FORWARD + BACKWARD, strict=True):
        assert title.startswith(expected), (title, expected)
    assert [s.phase for s in walk.steps] == ["forward"] * 6 + ["backward"] * 8
    for step in walk.steps:
        assert step.formula and step.latex and step.code.startswith(("minicond/", "kernel"))
        assert step.arrays and step.checks, step.title
    _assert_all_checks_pass(walk)
    text = out.getvalue()
    # in order, each with its formula, and the final verdict
    positions = [text.index(s.formula.splitlines()[0]) for s in walk.steps]
    assert positions == sorted(positions)
    assert "verdict: every step's gradient matches" in text
    # the defaults are small enough to print: the routing weights appear in full
    r = walk.steps[2].arrays[0][2]
    assert f"{r[0, 0]:.4f}" in text
    # the graph in docs/figures is this walkthrough's
    committed = (ROOT / "docs" / "figures" / "autograd_graph.dot").read_text(encoding="utf-8")
    assert walk.graph() == committed, ("docs/figures/autograd_graph.dot is stale: rerun "
                                       "python -m minicond.explain --only 1 --graph "
                                       "docs/figures/autograd_graph.dot")


def test_softmax_with_temperature_and_strided_dilated_geometry() -> None:
    walk = explain(batch=3, in_channels=3, out_channels=2, size=(5, 7), kernel_size=3,
                   stride=2, padding=2, dilation=2, num_experts=4, routing="softmax",
                   temperature=0.3, seed=5, quiet=True)
    _assert_all_checks_pass(walk)
    assert "softmax" in walk.steps[2].title and "τ = 0.3" in walk.steps[2].title
    gz_step = walk.steps[10]
    assert gz_step.title == "through the softmax"
    assert any("softmax_backward" in a.label for a in gz_step.agreements)
    r = walk.steps[2].arrays[0][2]
    np.testing.assert_allclose(r.sum(axis=1), 1.0)


@st.composite
def configs(draw: st.DrawFn) -> dict:
    """A valid small layer: kernel, dilation, stride and padding first, then an input size at
    least as large as the dilated kernel minus the padding."""
    k = draw(st.integers(1, 3))
    d = draw(st.integers(1, 2))
    pad = draw(st.integers(0, 2))
    span = d * (k - 1) + 1
    low = max(1, span - 2 * pad)
    return dict(batch=draw(st.integers(1, 3)), in_channels=draw(st.integers(1, 3)),
                out_channels=draw(st.integers(1, 3)),
                size=(draw(st.integers(low, low + 3)), draw(st.integers(low, low + 3))),
                kernel_size=k, stride=draw(st.integers(1, 2)), padding=pad, dilation=d,
                num_experts=draw(st.integers(1, 4)),
                routing=draw(st.sampled_from(["sigmoid", "softmax"])),
                temperature=draw(st.sampled_from([0.25, 1.0, 3.0])),
                seed=draw(st.integers(0, 1000)))


@fixture_settings
@given(cfg=configs())
def test_every_check_passes_on_drawn_configurations(cfg: dict) -> None:
    walk = explain(**cfg, fd_elements=6, quiet=True)
    _assert_all_checks_pass(walk)
    # the walkthrough recomputes the module's output, not some other convolution
    assert walk.autograd[0].label.startswith("y vs CondConv2d")


def test_every_backend_gives_the_same_walkthrough(backend: str) -> None:
    small = dict(batch=2, in_channels=2, out_channels=1, size=3, num_experts=2, fd_elements=4,
                 quiet=True)
    walk = explain(backend=backend, **small)
    _assert_all_checks_pass(walk)
    reference = explain(backend="numpy", **small)
    for step, ref in zip(walk.steps, reference.steps, strict=True):
        for (name, _, values), (_, _, ref_values) in zip(step.arrays, ref.arrays, strict=True):
            np.testing.assert_allclose(values, ref_values, rtol=1e-10, atol=1e-12,
                                       err_msg=f"{backend}: {step.title}: {name}")


def test_a_wrong_gradient_fails_its_check() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4))

    def loss(v: np.ndarray) -> float:
        return float(np.sum(np.sin(v)))

    right = finite_difference_check("sin", loss, a, np.cos(a), 100, rng)
    assert right.passed and right.checked == right.total == 12
    wrong = a.copy()
    wrong_grad = np.cos(a)
    wrong_grad[1, 2] += 1e-3
    bad = finite_difference_check("sin", loss, wrong, wrong_grad, 100, rng)
    assert not bad.passed and "FAILED" in bad.describe()
    sampled = finite_difference_check("sin", loss, a, np.cos(a), 5, rng)
    assert sampled.checked == 5 and "5 random of 12" in sampled.describe()
    assert not Agreement("x", 1e-6).passed and Agreement("x", 1e-13).passed


def test_markdown_page_is_written_atomically(tmp_path) -> None:
    path = tmp_path / "walkthrough.md"
    path.write_text("old")
    walk = explain(routing="softmax", temperature=0.5, markdown=str(path), quiet=True)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("# A CondConv2d forward and backward pass")
    for i, step in enumerate(walk.steps):
        assert f"## {i + 1}. {step.phase}: {step.title}" in page
        assert step.latex in page
    assert page.count("$$") == 2 * len(walk.steps)
    assert "**Verdict:** all checks passed" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walkthrough.md"]


def test_step_pauses_between_steps(monkeypatch) -> None:
    prompts = []
    monkeypatch.setattr("builtins.input", lambda prompt="": prompts.append(prompt) or "")
    tiny = dict(size=3, fd_elements=4)
    walk = explain(step=True, file=io.StringIO(), **tiny)
    assert len(prompts) == len(walk.steps) - 1

    def no_keyboard(prompt: str = "") -> str:
        prompts.append(prompt)
        raise EOFError

    prompts.clear()
    monkeypatch.setattr("builtins.input", no_keyboard)
    out = io.StringIO()
    explain(step=True, file=out, **tiny)
    assert len(prompts) == 1                      # stops asking once input is closed
    assert "verdict:" in out.getvalue()


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_experts=0), "num_experts=0"),
    (dict(routing="relu"), "routing='relu'"),
    (dict(temperature=0.0), "temperature=0.0"),
    (dict(size=2, kernel_size=5, padding=0), "larger than the padded input"),
    (dict(batch=1.5), "batch=1.5"),
    (dict(size=(3, 3, 3)), "size=(3, 3, 3)"),
    (dict(backend="tpu"), "backend='tpu'"),
])
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(
            ")", r"\)").replace("+", r"\+")):
        explain(quiet=True, **kwargs)


def test_command_line(capsys, tmp_path) -> None:
    assert main(["--experts", "2", "--size", "3", "5", "--routing", "softmax",
                 "--temperature", "2", "--markdown", str(tmp_path / "w.md")]) == 0
    out = capsys.readouterr().out
    assert "routing softmax with temperature τ = 2" in out and "verdict:" in out
    assert (tmp_path / "w.md").exists()
    assert main(["--experts", "0"]) == 2
    assert "num_experts=0" in capsys.readouterr().err

    parser = argparse.ArgumentParser(prog="minicond")
    register(parser.add_subparsers())
    args = parser.parse_args(["explain", "--batch", "1", "--kernel-size", "1", "--padding",
                              "0"])
    assert args.func(args) == 0
    assert "kernel_size=1" in capsys.readouterr().out


def test_module_runs_standalone() -> None:
    result = subprocess.run([sys.executable, "-m", "minicond.explain", "--size", "3",
                             "--experts", "2", "--backend", "numpy"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("verdict: every step")


def test_slices_are_printed_as_numbers_beside_summaries() -> None:
    out = io.StringIO()
    walk = explain(file=out)
    text = out.getvalue()
    mix = walk.steps[3]
    (_, _, W), (_, _, K) = mix.arrays
    r = walk.steps[2].arrays[0][2]
    assert W.size > 64 and "108 values: min" in text      # the experts are summarised...
    labels = [label for _, label, _ in mix.slices]
    assert labels[0].startswith("Θ[:, 0, 0]") and labels[1].startswith("K[0, 0, 0]")
    # ...and beside the summary, a slice of them as numbers, which really is that slice
    np.testing.assert_array_equal(mix.slices[0][2], W[:, 0, 0])
    np.testing.assert_allclose(mix.slices[1][2], np.einsum("e,eij->ij", r[0], W[:, 0, 0]))
    assert f"{W[1, 0, 0, 2, 1]:.4f}" in text.split("K [B, Cout")[0].split("Θ[:, 0, 0]")[1]
    conv = walk.steps[4]
    window = conv.slices[0][2]
    x = walk.steps[0].arrays[0][2]
    assert window.shape == (2, 3, 3)                      # [Cin, kh, kw] at the defaults
    np.testing.assert_array_equal(window[:, 0, :], 0.0)   # padding = 1: the top row is zero
    np.testing.assert_array_equal(window[:, 1:, 1:], x[0, :, :2, :2])
    gK_step = walk.steps[7]
    assert gK_step.slices[0][1] == "gK[0, 0]" and "gK[0, 0] =" in text
    # an array small enough to print whole gets no slice
    assert "x[0, 0] =" not in text and "r[0] =" not in text


def test_only_prints_one_step(capsys) -> None:
    out = io.StringIO()
    walk = explain(only=8, file=out, size=3, fd_elements=4)
    text = out.getvalue()
    assert "backward 8/14: weight gradient of the mixed kernel" in text
    assert text.count("── ") == 1 and "verdict:" not in text
    assert walk.passed and len(walk.steps) == 14           # every step still checked
    for bad in (0, 15):
        with pytest.raises(ValueError, match=f"only={bad} must be a step number from 1 to 14"):
            explain(only=bad, quiet=True)
    assert main(["--only", "1", "--size", "3", "--experts", "2"]) == 0
    printed = capsys.readouterr().out
    assert "forward 1/14: global average pool" in printed and "forward 2/14" not in printed
    assert main(["--only", "99"]) == 2


def test_graph_draws_the_layer(tmp_path, capsys) -> None:
    target = tmp_path / "layer.dot"
    assert main(["--size", "3", "--experts", "2", "--graph", str(target)]) == 0
    dot = target.read_text(encoding="utf-8")
    for label in ("x\\n[2, 2, 3, 3]", "weight\\n[2, 2, 2, 3, 3]", "routing.fc.weight",
                  "GlobalAvgPool2d", "Linear", "Sigmoid", "CondConv2d"):
        assert label in dot, label
    assert dot.count("‖grad‖") == 5                      # x and the four parameters
    assert f"to {target}" in capsys.readouterr().out
    walk = explain(size=3, num_experts=2, quiet=True)
    assert walk.graph() == dot
    assert main(["--graph", str(tmp_path / "layer.jpeg")]) == 2
    assert "must end in one of .svg" in capsys.readouterr().err
    assert main(["--size", "3", "--experts", "2", "--graph",
                 str(tmp_path / "no-such-folder" / "g.dot")]) == 2
    assert "no-such-folder" in capsys.readouterr().err


def _code_tour_section() -> list[str]:
    page = (ROOT / "docs" / "code_tour.md").read_text(encoding="utf-8")
    section = page.split("## The explain walkthrough", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines()
            if line.startswith("| ") and not line.startswith(("| step |", "| --- |"))]


def test_code_tour_carries_the_step_table() -> None:
    assert _code_tour_section() == code_tour_rows(), (
        "docs/code_tour.md's explain table differs from minicond/explain.py's STEP_TABLE; "
        "paste minicond.explain.code_tour_rows() into the page")


def test_every_code_pointer_exists() -> None:
    for info in STEP_TABLE:
        for path, names in info.code:
            source = (ROOT / path).read_text(encoding="utf-8")
            for name in names.split(", "):
                name = name.split(" (")[0]
                *owner, member = name.split(".")
                for part, kind in [*((o, "class") for o in owner),
                                   (member, "class" if member[0].isupper() else "def")]:
                    assert re.search(rf"^\s*{kind} {part}\b", source, re.M), (info.key, path,
                                                                              name)
        for kernel in info.kernels:
            assert kernel in KERNELS, (info.key, kernel)
