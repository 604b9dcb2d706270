"""``minicond predict``: classify images and show which experts each CondConv block chose.

Layer (docs/architecture.md): top, beside ``train.py``. Two kinds of model:

* an ImageNet model of ``minicond.models`` (``--model``), with its weights from a
  safetensors file (``--weights``, e.g. timm's ``model.safetensors``) or, without one, random
  weights; images are prepared as the model's ``pretrained_cfg`` says (``preprocess.py``) and
  the classes are the 1000 ImageNet-1k classes;
* a toy network trained by ``minicond train`` (``--checkpoint``), with its dataset's class
  names; images are converted to grey and resized to the training images' size.

For every image it reports the ``--topk`` classes with their softmax probabilities and, for
every block that computes routing weights, the weights r [E] that the image received (each
CondConv block records them in ``last_routing_weights``; a CondConv2d with its own router is
read through a forward hook on that router). ``--json``
prints the same as one JSON document.

Files that cannot be used (a missing or undecodable image, a weights file or checkpoint that
does not fit the model) stop the command before any model runs with a :class:`PredictError`
naming the file, which the ``minicond`` command reports in one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .autograd import no_grad
from .backends import BACKEND_NAMES
from .nn import Module, Router
from .preprocess import ImageError, PreprocessConfig, imagenet_classes, open_image, preprocess
from .preprocess import preprocess_grey as _grey
from .tensor import tensor

DEFAULT_MODEL = "tf_efficientnet_cc_b0_4e"


class PredictError(ValueError):
    """A file (or model name) ``minicond predict`` cannot use; the message names it."""


@dataclass
class Predictor:
    """A model in eval mode, its class names, how an image becomes its input, and where its
    weights came from (for the report)."""

    model: Module
    name: str
    classes: tuple[str, ...]
    transform: Callable[[Any], np.ndarray]
    weights: str | None
    synsets: tuple[str, ...] | None = None


@dataclass
class Prediction:
    """One image's result: ``top`` as (class index, probability) pairs, best first, and
    ``routing`` as block name → routing weights [E]."""

    path: str
    top: list[tuple[int, float]]
    routing: dict[str, list[float]] = field(default_factory=dict)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 400 else text[:397] + "..."


def imagenet_predictor(name: str, weights: str | None, backend: str,
                       image_size: int | None = None) -> Predictor:
    """An ImageNet model of ``minicond.models`` with weights from a safetensors file (random
    weights when ``weights`` is None); ``image_size`` overrides the model's input size."""
    from . import interop
    from .models import create_model

    try:
        model = create_model(name, backend=backend)
    except ValueError as err:
        raise PredictError(_one_line(err)) from None
    if not getattr(model, "pretrained_cfg", None):
        raise PredictError(f"model {name!r} has no ImageNet preprocessing (pretrained_cfg); a "
                           "toy network runs from its training checkpoint: --checkpoint CKPT")
    if weights is not None:
        if not Path(weights).is_file():
            raise PredictError(f"weights file {weights!r} does not exist or is not a file")
        try:
            interop.load_safetensors(model, weights)
        except (ValueError, KeyError, TypeError, OSError) as err:
            text = _one_line(err)
            raise PredictError(text if str(weights) in text else f"weights file {weights!r} "
                               f"does not fit model {name}: {text}") from None
    cfg = dict(model.pretrained_cfg)
    if image_size is not None:
        cfg["input_size"] = (cfg["input_size"][0], image_size, image_size)
    config = PreprocessConfig.from_pretrained_cfg(cfg)
    rows = imagenet_classes()
    return Predictor(model.eval(), name, tuple(n for _, n in rows),
                     lambda image: preprocess(image, config), weights,
                     tuple(s for s, _ in rows))


def checkpoint_predictor(path: str, backend: str) -> Predictor:
    """The toy network of a ``minicond train`` checkpoint, with its dataset's class names."""
    from .checkpoint import CheckpointError, load_checkpoint
    from .data import SHAPE_CLASSES
    from .models import build_model

    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise PredictError(_one_line(err)) from None
    try:
        config = state["config"]
        dataset = config["dataset"]
        if dataset == "shapes":
            classes, size = SHAPE_CLASSES, int(config["image_size"])
        elif dataset == "digits":
            classes, size = tuple(str(d) for d in range(10)), 8
        else:
            raise ValueError(f"unknown dataset {dataset!r}")
        model = build_model(config["model"], (1, size, size), len(classes),
                            experts=int(config["experts"]), width=int(config["width"]),
                            backend=backend)
        model.load_state_dict(state["model"])
    except (KeyError, ValueError, TypeError) as err:
        raise PredictError(f"checkpoint {path!r} does not hold a model minicond predict can "
                           f"rebuild: {_one_line(err)}") from None
    return Predictor(model.eval(), f"{config['model']} ({dataset})", classes,
                     lambda image: _grey(image, size), path)


def forward_with_routing(model: Module, x: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The model's logits for ``x`` and the routing weights [B, E] it used, by module name:
    those each CondConv block records (``last_routing_weights``, one router shared by the
    block's layers) and, through forward hooks, the output of every CondConv2d's own Router."""
    hooked: dict[str, np.ndarray] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: Module, args: tuple[Any, ...], output: Any) -> None:
            hooked[name] = output.numpy()
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()
               if isinstance(m, Router)]
    try:
        with no_grad():
            logits = model(x).numpy().astype(np.float64)
    finally:
        for handle in handles:
            handle.remove()
    routing = {}
    for name, m in model.named_modules():
        r = m.__dict__.get("last_routing_weights")
        if r is not None:
            routing[name] = r.numpy()
    for name, r in hooked.items():
        owner = name.rpartition(".")[0]  # the CondConv2d or block that holds this router
        if owner not in routing:
            routing[owner] = r
    return logits, routing


def run_predictor(predictor: Predictor, paths: Sequence[str], topk: int) -> list[Prediction]:
    """Decode and prepare every image first (so a bad file stops everything before the model
    runs), then classify them as one batch."""
    inputs = []
    for p in paths:
        try:
            inputs.append(predictor.transform(open_image(p)))
        except ImageError as err:
            raise PredictError(f"image {err}") from None
    param = next(predictor.model.parameters())
    logits, routing = forward_with_routing(
        predictor.model, tensor(np.stack(inputs), dtype=param.dtype, backend=param.backend))
    z = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    k = min(topk, probabilities.shape[1])
    results = []
    for b, p in enumerate(paths):
        order = np.argsort(-probabilities[b], kind="stable")[:k]
        results.append(Prediction(str(p), [(int(i), float(probabilities[b, i])) for i in order],
                                  {name: [float(v) for v in r[b]]
                                   for name, r in routing.items()}))
    return results


def format_text(predictor: Predictor, results: Sequence[Prediction]) -> str:
    """The human-readable report: per image the top classes, then the routing weights."""
    lines = []
    for result in results:
        lines.append(result.path)
        for index, probability in result.top:
            lines.append(f"  {probability:7.2%}  {predictor.classes[index]}")
        if result.routing:
            width = max(len(name) for name in result.routing)
            lines.append("  routing weights per CondConv block (one per expert):")
            for name, r in result.routing.items():
                lines.append(f"    {name:<{width}}  " + " ".join(f"{v:.3f}" for v in r))
    return "\n".join(lines)


def to_json(predictor: Predictor, results: Sequence[Prediction], backend: str) -> str:
    """The same report as one JSON document."""
    def entry(index: int, probability: float) -> dict[str, Any]:
        item: dict[str, Any] = {"index": index, "name": predictor.classes[index],
                                "probability": probability}
        if predictor.synsets is not None:
            item["synset"] = predictor.synsets[index]
        return item

    return json.dumps({
        "model": predictor.name, "weights": predictor.weights,
        "random_weights": predictor.weights is None, "backend": backend,
        "images": [{"path": r.path, "top": [entry(i, p) for i, p in r.top],
                    "routing": r.routing} for r in results],
    }, indent=2)


def run(args: argparse.Namespace) -> int:
    """The ``predict`` subcommand; a :class:`PredictError` (a ValueError) raised here becomes
    ``minicond predict: error: ...`` and exit status 2 in ``cli.run_command``."""
    from .train import resolve_backend

    if args.checkpoint is not None and (args.weights or args.image_size):
        raise PredictError("--weights and --image-size are for --model; a --checkpoint holds "
                           "its own weights and image size")
    backend = resolve_backend(args.backend)
    if args.checkpoint is not None:
        predictor = checkpoint_predictor(args.checkpoint, backend)
    else:
        predictor = imagenet_predictor(args.model, args.weights, backend, args.image_size)
    results = run_predictor(predictor, args.images, args.topk)
    if predictor.weights is None:
        print(f"minicond predict: no --weights given: {predictor.name} has random weights, so "
              "its classes and routing mean nothing", file=sys.stderr)
    print(to_json(predictor, results, backend) if args.json else format_text(predictor,
                                                                             results))
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid int") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``predict`` subcommand to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        "predict", help="classify images with an ImageNet CondConv model or a trained toy model",
        description="Print the top classes of each image and the routing weights each "
        "CondConv block gave it. ImageNet models take timm's safetensors weights "
        "(--weights); without them they run with random weights. --checkpoint runs a toy "
        "network trained by 'minicond train'.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format "
                        "Pillow reads)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"an ImageNet model of minicond.models (default {DEFAULT_MODEL})")
    source.add_argument("--checkpoint", metavar="CKPT", default=None,
                        help="a checkpoint of 'minicond train' (latest.ckpt or best.ckpt)")
    parser.add_argument("--weights", metavar="FILE", default=None,
                        help="safetensors weights for --model, e.g. timm's model.safetensors")
    parser.add_argument("--backend", choices=BACKEND_NAMES, default=None,
                        help="kernel backend (default: numba if it can run here, else numpy)")
    parser.add_argument("--topk", type=_positive, default=5, help="classes per image "
                        "(default 5)")
    parser.add_argument("--image-size", type=_positive, default=None,
                        help="ImageNet models: input side in pixels instead of the model's own")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(func=run)
    return parser
