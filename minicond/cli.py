"""The ``minicond`` command: ``train``, ``compare``, ``explain`` and ``predict``.

Layer (docs/architecture.md): top. Parses arguments with argparse (a bad argument exits with status
2 and a message naming it), builds a :class:`~minicond.train.TrainConfig` and hands it to
``train.py``.

Every subcommand runs through :func:`run_command`, the one place that turns errors into a
one-line message and an exit status (the README's table): 0 done; 1 the command ran and
stopped on a failure (a non-finite training loss, a failed ``explain`` check); 2 bad
arguments or files that cannot be read or written (``ValueError``, ``OSError``, a damaged
checkpoint, a run directory in use, a missing optional package or backend, not enough
memory); 130 interrupted by Ctrl-C. A subcommand's ``func`` returns 0 or 1 and raises for
the rest.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .backends import BACKEND_NAMES, BackendUnavailableError
from .data import DATASETS
from .models import MODELS

EXIT_DONE = 0
EXIT_STOPPED = 1          # the command ran and stopped on a failure (non-finite loss)
EXIT_BAD_INPUT = 2        # bad arguments, unreadable or unwritable files
EXIT_INTERRUPTED = 130    # Ctrl-C (128 + SIGINT, as shells report it)
# Subcommands that live in their own module and add themselves with ``register(subparsers)``.
OPTIONAL_COMMANDS = ("explain", "predict")


def _defaults() -> Any:
    from .train import TrainConfig

    return TrainConfig()


def _bounded(kind: Callable[[str], Any], low: float, name: str,
             strict: bool = False) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` that is >= low (> low when ``strict``)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a valid {kind.__name__}") from None
        if value != value or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(
                f"{name} must be {'>' if strict else '>='} {low}, got {text}")
        if isinstance(value, float) and math.isinf(value):
            raise argparse.ArgumentTypeError(f"{name} must be finite, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _run_directory(text: str) -> str:
    """An argparse type for ``--out``: an empty name would silently mean the current
    directory."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _add_run_arguments(parser: argparse.ArgumentParser, defaults: Any) -> None:
    """Options shared by ``train`` and ``compare``."""
    add = parser.add_argument
    add("--dataset", choices=DATASETS, default=defaults.dataset,
        help="shapes: procedural, no download (default); digits: scikit-learn's 8x8 digits "
             "(extra 'data')")
    add("--experts", type=_bounded(int, 1, "--experts"), default=defaults.experts,
        help=f"experts per CondConv layer (default {defaults.experts})")
    add("--epochs", type=_bounded(int, 1, "--epochs"), default=defaults.epochs,
        help=f"training epochs (default {defaults.epochs})")
    add("--batch-size", type=_bounded(int, 1, "--batch-size"), default=defaults.batch_size,
        help=f"(default {defaults.batch_size})")
    add("--lr", type=_bounded(float, 0.0, "--lr", strict=True), default=defaults.lr,
        help=f"peak learning rate of the warmup + cosine schedule (default {defaults.lr})")
    add("--optimizer", choices=("sgd", "adam", "adamw"), default=defaults.optimizer,
        help=f"(default {defaults.optimizer}); sgd uses Nesterov momentum 0.9")
    add("--weight-decay", type=_bounded(float, 0.0, "--weight-decay"),
        default=defaults.weight_decay, help=f"(default {defaults.weight_decay})")
    add("--width", type=_bounded(int, 2, "--width"), default=defaults.width,
        help=f"channels of the stem; the blocks have 1.5x and 2x (default {defaults.width})")
    add("--backend", choices=BACKEND_NAMES, default=None,
        help="kernel backend (default: numba if it can run here, else numpy)")
    add("--seed", type=_bounded(int, 0, "--seed"), default=defaults.seed,
        help="seed of the data, the initialisation and the batch order (default 0)")
    add("--train-size", type=_bounded(int, 1, "--train-size"), default=defaults.train_size,
        help=f"shapes: training images (default {defaults.train_size})")
    add("--test-size", type=_bounded(int, 1, "--test-size"), default=defaults.test_size,
        help=f"shapes: test images (default {defaults.test_size})")
    add("--image-size", type=_bounded(int, 8, "--image-size"), default=defaults.image_size,
        help=f"shapes: image side in pixels (default {defaults.image_size})")
    add("--no-plots", action="store_true", help="do not write PNGs or routing.json")
    add("--no-progress", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace, model: str, out: Path) -> Any:
    from .train import TrainConfig

    return TrainConfig(
        model=model, dataset=args.dataset, experts=args.experts, width=args.width,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, backend=args.backend, seed=args.seed, out=str(out),
        train_size=args.train_size, test_size=args.test_size, image_size=args.image_size,
        plots=not args.no_plots, progress=False if args.no_progress else None)


def _describe(err: BaseException) -> str:
    """One line for an error; an ``OSError`` names its path first, as ``ls`` and ``cp`` do."""
    if isinstance(err, MemoryError):
        return "out of memory" + (f" ({err})" if str(err) else "") + (
            "; lower --batch-size, --width or --image-size")
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}"
    return " ".join(str(err).split()) or type(err).__name__


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed subcommand ``args.func(args)`` and map what it raises to the exit
    statuses of the module docstring, printing ``minicond COMMAND: error: ...`` (one line,
    no traceback) on stderr."""
    from .train import RunDirectoryInUse, TrainingError

    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        # A Ctrl-C outside the training steps (loading, a second Ctrl-C while saving).
        print(f"minicond {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingError as err:
        status = EXIT_STOPPED
        message = _describe(err)
    except (ValueError, OSError, MemoryError, RunDirectoryInUse, BackendUnavailableError,
            ImportError) as err:
        # ValueError includes checkpoint.CheckpointError (a damaged or foreign checkpoint).
        status = EXIT_BAD_INPUT
        message = _describe(err)
    print(f"minicond {args.command}: error: {message}", file=sys.stderr)
    return status


def run_train(args: argparse.Namespace) -> int:
    from .train import train

    out = Path(args.out) if args.out is not None else Path("runs") / (
        f"{args.model}-{args.dataset}")
    result = train(_config(args, args.model, out), resume=args.resume)
    if result.status == "interrupted":
        return EXIT_INTERRUPTED
    final = result.final
    print(f"done: test accuracy {final.get('test_accuracy', 0):.4f} (best "
          f"{result.best_accuracy:.4f}), {sum(h['seconds'] for h in result.history):.0f} s "
          f"of training; checkpoints and metrics.jsonl in {result.out}")
    return EXIT_DONE


def run_compare(args: argparse.Namespace) -> int:
    from .profile import count_macs
    from .train import train

    out = Path(args.out) if args.out is not None else Path("runs") / f"compare-{args.dataset}"
    rows = []
    for model in MODELS:
        result = train(_config(args, model, out / model))
        if result.status == "interrupted":
            return EXIT_INTERRUPTED
        macs = count_macs(result.model, result.image_shape).total
        seconds = sum(h["seconds"] for h in result.history)
        images_per_second = sum(h["images_per_second"] * h["seconds"]
                                for h in result.history) / max(seconds, 1e-9)
        rows.append((model, result.final["test_accuracy"], result.best_accuracy,
                     result.parameters, macs, images_per_second))
    print()
    print(format_comparison(rows))
    return EXIT_DONE


def format_comparison(rows: Sequence[tuple[str, float, float, int, int, float]]) -> str:
    """The side-by-side table of ``compare``."""
    header = ("model", "test acc", "best acc", "parameters", "MACs/image", "train images/s")
    lines = [header] + [(m, f"{acc:.4f}", f"{best:.4f}", f"{params:,}", f"{macs:,}",
                         f"{speed:,.0f}") for m, acc, best, params, macs, speed in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
                     for line in lines)


def build_parser() -> argparse.ArgumentParser:
    defaults = _defaults()
    parser = argparse.ArgumentParser(
        prog="minicond", description="CondConv from scratch: train toy models, compare "
        "CondConv with a static network, and step through the math.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train_p = sub.add_parser(
        "train", help="train a model on the toy data (default: CondConv on shapes)",
        description="Train a small CondConv (or static) network. Writes checkpoints "
        "(latest.ckpt, best.ckpt), metrics.jsonl and plots into --out. Ctrl-C saves and "
        "exits; --resume continues exactly where the run stopped.")
    train_p.add_argument("--model", choices=MODELS, default=defaults.model,
                         help="condconv (default) or its static twin")
    _add_run_arguments(train_p, defaults)
    train_p.add_argument("--out", metavar="DIR", type=_run_directory, default=None,
                         help="run directory (default runs/MODEL-DATASET)")
    train_p.add_argument("--resume", action="store_true",
                         help="continue from DIR/latest.ckpt with the same settings")
    train_p.set_defaults(func=run_train)

    compare_p = sub.add_parser(
        "compare", help="train CondConv and its static twin with the same budget",
        description="Train the CondConv network and its static twin with the same data, "
        "epochs and optimizer; print accuracy, parameters, multiply-adds per image and "
        "training speed side by side.")
    _add_run_arguments(compare_p, defaults)
    compare_p.add_argument("--out", metavar="DIR", type=_run_directory, default=None,
                           help="runs go to DIR/condconv and DIR/static "
                           "(default runs/compare-DATASET)")
    compare_p.set_defaults(func=run_compare)

    for name in OPTIONAL_COMMANDS:
        if importlib.util.find_spec(f"{__package__}.{name}") is not None:
            importlib.import_module(f".{name}", __package__).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``minicond`` console script and of ``python -m minicond``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
