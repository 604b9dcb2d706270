"""Pictures of a training run: loss/accuracy curves and the routing weights per class.

Layer (docs/architecture.md): top, used by ``train.py``. matplotlib is optional (the ``plot``
extra): without it, :func:`write_plots` still writes ``routing.json`` and returns a one-line note
instead of PNGs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ._files import write_atomic
from .autograd import no_grad
from .data import Dataset
from .nn import CondConvInvertedResidual, Module, Router
from .tensor import tensor


def routing_by_class(model: Module, images: np.ndarray, labels: np.ndarray, num_classes: int,
                     backend: str, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Mean routing weights per class, ``{router name: [num_classes, E]}``, for every router
    of ``model`` (a CondConv block's ``routing_fn``, or the Router of a CondConv2d that routes
    itself), in eval mode."""
    # (module, the method that returns its routing weights) under the router's name
    routers = [(name, m, "forward") for name, m in model.named_modules()
               if isinstance(m, Router)]
    routers += [(f"{name}.routing_fn", m, "routing_weights") for name, m in model.named_modules()
                if isinstance(m, CondConvInvertedResidual)]
    sums = {name: None for name, _, _ in routers}
    captured: dict[str, np.ndarray] = {}
    originals = {}
    for name, router, method in routers:
        original = getattr(router, method)

        def capture(x: Any, _name: str = name, _original: Any = original) -> Any:
            r = _original(x)
            captured[_name] = r.numpy()
            return r

        originals[name] = (router, method)
        object.__setattr__(router, method, capture)
    was_training = model.training
    model.eval()
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    try:
        with no_grad():
            for start in range(0, len(labels), batch_size):
                model(tensor(images[start:start + batch_size], backend=backend))
                onehot = np.eye(num_classes)[labels[start:start + batch_size]]   # [b, K]
                for name in sums:
                    part = onehot.T @ captured[name].astype(np.float64)          # [K, E]
                    sums[name] = part if sums[name] is None else sums[name] + part
    finally:
        for router, method in originals.values():
            del router.__dict__[method]
        model.train(was_training)
    return {name: s / np.maximum(counts, 1.0)[:, None] for name, s in sums.items()}


def write_plots(model: Module, data: Dataset, history: list[dict[str, Any]], out: Path,
                backend: str) -> str:
    """Write ``routing.json`` and, with matplotlib, ``curves.png`` and ``routing.png`` into
    ``out``; return a one-line note saying what was written."""
    routing = routing_by_class(model, data.test_images, data.test_labels, data.num_classes,
                               backend)
    if routing:
        write_atomic(out / "routing.json", json.dumps(
            {"classes": list(data.classes),
             "routers": {k: v.round(6).tolist() for k, v in routing.items()}},
            indent=1).encode())
    try:
        import matplotlib
    except ImportError:
        return ("plots: matplotlib is not installed, no PNGs written "
                "(pip install matplotlib)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = [_curves(plt, history, out / "curves.png")]
    if routing:
        written.append(_routing(plt, routing, data.classes, out / "routing.png"))
    return "plots: " + ", ".join(str(p) for p in written)


def _curves(plt: Any, history: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["test_loss"] for h in history], "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [h["test_accuracy"] for h in history], "s-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    """Render ``fig`` as PNG in memory and write it atomically, as every file of a run."""
    try:
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100)
    finally:
        plt.close(fig)
    return write_atomic(path, png.getvalue())


def _routing(plt: Any, routing: dict[str, np.ndarray], classes: tuple[str, ...],
             path: Path) -> Path:
    """One heat map per router: rows are classes, columns experts, colour the mean weight."""
    n = len(routing)
    fig, axes = plt.subplots(1, n, figsize=(2.2 + 1.6 * n, 0.45 * len(classes) + 1.6),
                             squeeze=False)
    for ax, (name, weights) in zip(axes[0], routing.items(), strict=True):
        image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=max(1e-9, weights.max()),
                          aspect="auto")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(weights.shape[1]))
        ax.set_xlabel("expert")
        ax.set_yticks(range(len(classes)))
        ax.set_yticklabels(classes if ax is axes[0][0] else [])
        fig.colorbar(image, ax=ax, fraction=0.08)
    fig.suptitle("mean routing weight per class")
    return _save(plt, fig, path)
