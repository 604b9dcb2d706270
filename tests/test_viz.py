"""mc.viz: the DOT text of a small known graph (nodes, labels, edges, gradient norms after
backward), names from a Module, and render's two paths (graphviz, or the .dot fallback)."""

from __future__ import annotations

import re
import shutil
import sys
import types

import numpy as np
import pytest

import minicond as mc

NODE = re.compile(r'^  (n\d+) \[label="(.*?)", (.*)\];$', re.M)
EDGE = re.compile(r"^  (n\d+) -> (n\d+);$", re.M)


def parse(dot: str) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str]]]:
    """{node id: (label with real newlines, attributes)} and the edges, from our DOT text."""
    assert dot.startswith("digraph autograd {") and dot.rstrip().endswith("}")
    nodes = {k: (label.replace("\\n", "\n"), attrs) for k, label, attrs in NODE.findall(dot)}
    return nodes, EDGE.findall(dot)


def small_graph():
    rng = np.random.default_rng(0)
    a = mc.tensor(rng.standard_normal((2, 3)), dtype="float64", requires_grad=True)
    b = mc.tensor(rng.standard_normal((2, 3)), dtype="float64", requires_grad=True)
    c = mc.tensor(rng.standard_normal((2, 3)), dtype="float64")    # a constant: not drawn
    y = (a * b * c).sum()
    return a, b, y


def test_dot_of_a_small_known_graph() -> None:
    a, b, y = small_graph()
    nodes, edges = parse(mc.viz.graph(y, names={"a": a, "b": b}))
    by_label = {label.split("\n")[0]: k for k, (label, _) in nodes.items()}
    # two leaves, two Mul applications, one Sum: the constant c has no node
    assert len(nodes) == 5 and sorted(by_label) == ["Mul", "Sum", "a", "b"]
    labels = sorted(label for label, _ in nodes.values())
    assert labels == ["Mul\n[2, 3] float64", "Mul\n[2, 3] float64", "Sum\n[] float64",
                      "a\n[2, 3] float64", "b\n[2, 3] float64"]
    muls = [k for k, (label, _) in nodes.items() if label.startswith("Mul")]
    first, second = sorted(muls, key=lambda k: sum(e[1] == k for e in edges), reverse=True)
    assert sorted(edges) == sorted([(by_label["a"], first), (by_label["b"], first),
                                    (first, second), (second, by_label["Sum"])])
    # leaves are boxes, ops ellipses, the result has a double outline
    assert all("shape=box" in nodes[by_label[n]][1] for n in "ab")
    assert "shape=ellipse" in nodes[by_label["Sum"]][1]
    assert [k for k, (_, attrs) in nodes.items() if "peripheries=2" in attrs] == [by_label["Sum"]]


def test_gradient_norms_after_backward_on_leaves_only() -> None:
    a, b, y = small_graph()
    assert "‖grad‖" not in mc.viz.graph(y)
    y.backward()
    nodes, _ = parse(mc.viz.graph(y, names=[("a", a), ("b", b)]))
    for name, t in (("a", a), ("b", b)):
        label = next(lbl for lbl, _ in nodes.values() if lbl.startswith(name + "\n"))
        assert label.endswith(f"‖grad‖ = {np.linalg.norm(t.grad.numpy()):.4g}")
    assert sum("‖grad‖" in label for label, _ in nodes.values()) == 2


def test_a_condconv_layer_with_parameter_names() -> None:
    mc.manual_seed(0)
    layer = mc.nn.CondConv2d(2, 3, 3, padding=1, num_experts=2, dtype="float64").eval()
    x = mc.tensor(np.ones((1, 2, 4, 4)), dtype="float64", requires_grad=True)
    nodes, edges = parse(mc.viz.graph(layer(x), names=layer))
    first_lines = sorted(label.split("\n")[0] for label, _ in nodes.values())
    assert first_lines == sorted(["leaf", "weight", "bias", "routing.fc.weight",
                                  "routing.fc.bias", "GlobalAvgPool2d", "Linear", "Sigmoid",
                                  "CondConv2d"])
    x_node = next(k for k, (label, _) in nodes.items() if label.startswith("leaf"))
    assert sum(src == x_node for src, _ in edges) == 2   # x feeds the pool and the convolution


def test_names_are_escaped_and_checked() -> None:
    a, b, y = small_graph()
    dot = mc.viz.graph(y, names={'say "hi"\\': a})
    assert 'label="say \\"hi\\"\\\\\\n[2, 3] float64"' in dot
    with pytest.raises(TypeError, match="names must be"):
        mc.viz.graph(y, names=[a])
    with pytest.raises(TypeError, match="must be a minicond Tensor"):
        mc.viz.graph(np.ones(3))


def test_render_without_graphviz_writes_dot_and_says_how(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)     # no dot program
    a, b, y = small_graph()
    written = mc.viz.render(y, tmp_path / "g.svg")
    assert written == tmp_path / "g.dot"
    assert written.read_text(encoding="utf-8") == mc.viz.graph(y)
    message = capsys.readouterr().out
    assert "not installed" in message and f"dot -Tsvg {written} -o {tmp_path / 'g.svg'}" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.dot"]
    assert mc.viz.render(y, tmp_path / "h.dot") == tmp_path / "h.dot"
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match=r"must end in one of \.svg"):
        mc.viz.render(y, tmp_path / "g.jpeg")


def test_render_with_graphviz_pipes_the_dot_text(tmp_path, monkeypatch) -> None:
    seen = []

    class Source:
        def __init__(self, text: str) -> None:
            seen.append(text)

        def pipe(self, format: str) -> bytes:
            return f"<{format}>".encode()

    monkeypatch.setitem(sys.modules, "graphviz", types.SimpleNamespace(Source=Source))
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/dot" if name == "dot" else None)
    a, b, y = small_graph()
    assert mc.viz.render(y, tmp_path / "g.png") == tmp_path / "g.png"
    assert (tmp_path / "g.png").read_bytes() == b"<png>"
    assert seen == [mc.viz.graph(y)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png"]
