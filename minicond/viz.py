"""Draw the autograd graph behind a result: Graphviz DOT text, rendered when Graphviz is there.

Layer: beside the public API (see docs/architecture.md); reads the records ``autograd.py``
leaves on tensors and changes nothing. :func:`graph` needs no dependency; :func:`render`
uses the optional ``graphviz`` Python package and its ``dot`` program when both are
installed, and otherwise writes the DOT file and says how to render it.

What the picture shows:

* one box per **leaf** that requires a gradient (an input or a parameter): its name when
  ``names`` gives one, shape, dtype and, once ``backward`` has run, ‖grad‖ (the Frobenius
  norm of its ``.grad``);
* one ellipse per **Function application** (an op in the forward pass): the Function's name
  and the shape and dtype of the tensor it produced. Interior gradients are not shown:
  backward frees them as soon as they are used (only leaves keep ``.grad``), and the picture
  does not ask autograd to keep more;
* an arrow from each input to the op that used it, so data flows from the leaves at the top
  to the result (double outline) at the bottom. Constants (tensors that need no gradient)
  are left out: backward never visits them.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ._files import write_atomic
from .autograd import _topological_order
from .tensor import Tensor

__all__ = ["graph", "render"]

FORMATS = ("svg", "png", "pdf", "dot")


def _names(names: Any) -> dict[int, str]:
    """id(tensor) -> name from a Module, a mapping name -> Tensor or (name, Tensor) pairs."""
    if names is None:
        return {}
    if hasattr(names, "named_parameters"):
        names = names.named_parameters()
    pairs: Iterable[Any] = names.items() if isinstance(names, Mapping) else names
    out = {}
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
                and isinstance(pair[1], Tensor)):
            raise TypeError(f"graph: names must be a Module, a mapping from names to Tensors or "
                            f"(name, Tensor) pairs; got an item {pair!r:.80}")
        out[id(pair[1])] = pair[0]
    return out


def _quote(text: str) -> str:
    """A DOT string literal: backslashes and quotes escaped, lines joined by DOT's \\n."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "\\n".join(escaped.splitlines()) + '"'


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(n) for n in t.shape) + "]"


def graph(tensor: Tensor, names: Any = None) -> str:
    """The autograd graph that produced ``tensor``, as Graphviz DOT text.

    ``names`` labels leaves: a Module (its ``named_parameters``), a mapping name -> Tensor or
    (name, Tensor) pairs. See the module docstring for what each node shows.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"graph: tensor must be a minicond Tensor, got {type(tensor).__name__}")
    label_of = _names(names)
    order = _topological_order(tensor)          # the result first, each tensor before its inputs
    ids = {id(t): f"n{k}" for k, t in enumerate(reversed(order))}   # leaves get low numbers
    lines = ["digraph autograd {", "  rankdir=TB;",
             '  node [fontname="Helvetica", fontsize=11];']
    for t in reversed(order):
        detail = f"{_shape(t)} {t.dtype}"
        attrs: list[str]
        if t._node is None:
            label = f"{label_of.get(id(t), 'leaf')}\n{detail}"
            if t.grad is not None:
                norm = float(np.linalg.norm(t.grad.numpy().astype(np.float64)))
                label += f"\n‖grad‖ = {norm:.4g}"
            attrs = ["shape=box", "style=filled", 'fillcolor="#dbe9f6"']
        else:
            label = f"{t._node.function.__name__}\n{detail}"
            attrs = ["shape=ellipse"]
        if t is tensor:
            attrs.append("peripheries=2")
        lines.append(f"  {ids[id(t)]} [label={_quote(label)}, {', '.join(attrs)}];")
    for t in reversed(order):
        if t._node is None:
            continue
        for parent in t._node.inputs:
            if isinstance(parent, Tensor) and id(parent) in ids:
                lines.append(f"  {ids[id(parent)]} -> {ids[id(t)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _graphviz() -> Any:
    """The ``graphviz`` module when it and its ``dot`` program are installed, else None."""
    try:
        module = importlib.import_module("graphviz")
    except ImportError:
        return None
    return module if shutil.which("dot") else None


def render(tensor: Tensor, path: str | os.PathLike, names: Any = None,
           file: TextIO | None = None) -> Path:
    """Draw :func:`graph` of ``tensor`` into ``path``; returns the path written.

    The format comes from the suffix: ``.svg``, ``.png`` or ``.pdf`` render through the
    ``graphviz`` package and its ``dot`` program when both are installed; without them (or
    for ``.dot``) the DOT text goes to ``path`` with the suffix ``.dot``, and a line on
    ``file`` (default stdout) says so and how to render it. Files are written atomically.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"render: path={str(path)!r} must end in one of "
                         f"{', '.join('.' + f for f in FORMATS)}")
    dot = graph(tensor, names)
    out = sys.stdout if file is None else file
    gv = None if fmt == "dot" else _graphviz()
    if gv is None:
        dot_path = write_atomic(path.with_suffix(".dot"), dot)
        if fmt != "dot":
            print(f"graphviz (the Python package and its dot program) is not installed: wrote "
                  f"{dot_path}; render it with `dot -T{fmt} {dot_path} -o {path}`, or install "
                  f"both (pip install graphviz; the dot program from graphviz.org)", file=out)
        return dot_path
    return write_atomic(path, gv.Source(dot).pipe(format=fmt))
