"""The training loop behind ``minicond train`` and ``minicond compare``.

Layer (docs/architecture.md): top, beside ``cli.py``. One :class:`TrainConfig` says what to train;
:func:`train` runs it and writes, into ``config.out``:

* ``latest.ckpt`` after every epoch (and on Ctrl-C), ``best.ckpt`` when the test accuracy
  improves: model, optimizer, loader position, random generator, epoch and metrics, written
  atomically (``checkpoint.py``); ``best.ckpt`` is written before ``latest.ckpt``, so a crash
  between the two never loses the best model;
* ``metrics.jsonl``, one line per epoch, written after the checkpoints and rewritten from
  ``latest.ckpt`` on resume, so it is never ahead of the checkpoint;
* ``run.lock``, locked (``fcntl.flock``) while a run uses the directory and holding its PID:
  a second run on the same directory is refused, and the kernel releases the lock when its
  holder dies;
* ``curves.png`` and ``routing.png`` when matplotlib is installed (``plots.py``), and
  ``routing.json``, the mean routing weights per class of every CondConv router.

``resume=True`` restores ``latest.ckpt`` and continues with the very batch that would have
come next: the loader's order depends only on (seed, epoch), and the generator that draws
dropout masks is restored, so 2 epochs straight and 1 + resume 1 give the same parameters.

Everything that can be checked before training is: the settings (finite learning rate and
weight decay, a memory estimate against the machine's memory), then the run directory (it
can be created, locked and written into); the temporary files of a killed save are removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import functional as F
from . import random as mc_random
from ._files import write_atomic
from ._validate import check_float, check_int
from .autograd import no_grad
from .backends import BackendUnavailableError, get_backend
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import DATASETS, DataLoader, Dataset, load_dataset
from .models import MODELS, build_model
from .nn import Module
from .optim import SGD, Adam, AdamW, CosineWarmup, Optimizer
from .tensor import tensor

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not protected from each other
    fcntl = None  # type: ignore[assignment]

OPTIMIZERS = ("sgd", "adam", "adamw")
# Settings that must match for a checkpoint to continue a run (epochs may grow).
_RESUME_KEYS = ("model", "dataset", "experts", "width", "batch_size", "lr", "optimizer",
                "weight_decay", "warmup_epochs", "seed", "train_size", "test_size",
                "image_size")


@dataclass
class TrainConfig:
    """Everything that defines a run; the defaults are ``minicond train`` with no flags."""

    model: str = "condconv"
    dataset: str = "shapes"
    experts: int = 4
    width: int = 16
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    backend: str | None = None
    seed: int = 0
    out: str = "runs/minicond"
    train_size: int = 12000
    test_size: int = 1200
    image_size: int = 16
    plots: bool = True
    progress: bool | None = None   # None: a progress bar only on a terminal

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        """Refuse settings that cannot train, before anything is built or written: unknown
        names, non-finite rates, an empty ``out``, and runs whose estimated memory
        (:func:`estimate_memory`) exceeds the machine's."""
        if self.model not in MODELS:
            raise ValueError(f"train: model={self.model!r}; expected one of {MODELS}")
        if self.dataset not in DATASETS:
            raise ValueError(f"train: dataset={self.dataset!r}; expected one of {DATASETS}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train: optimizer={self.optimizer!r}; expected one of "
                             f"{OPTIMIZERS}")
        for name, low in (("experts", 1), ("width", 2), ("epochs", 1), ("batch_size", 1),
                          ("seed", 0), ("train_size", 1), ("test_size", 1),
                          ("image_size", 8)):
            check_int("train", name, getattr(self, name), low)
        check_float("train", "lr", self.lr, 0.0, math.inf, low_open=True, high_open=True)
        check_float("train", "weight_decay", self.weight_decay, 0.0, math.inf,
                    high_open=True)
        check_float("train", "warmup_epochs", self.warmup_epochs, 0.0, math.inf,
                    high_open=True)
        if not isinstance(self.out, str) or not self.out:
            raise ValueError(f"train: out={self.out!r} must name a run directory")
        _check_memory(self)
        return self


class TrainingError(RuntimeError):
    """Training stopped: the loss became non-finite."""


class RunDirectoryInUse(RuntimeError):
    """Another run holds the lock of the run directory."""


@dataclass
class TrainResult:
    """How a run ended and what it measured."""

    status: str                      # "finished" | "interrupted"
    epoch: int                       # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    best_accuracy: float = 0.0
    parameters: int = 0
    backend: str = ""
    out: Path = Path(".")
    model: Module | None = None
    image_shape: tuple[int, ...] = ()

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def resolve_backend(name: str | None) -> str:
    """The backend to train on: ``name`` if given, else the fastest CPU backend present
    (``"numba"``, falling back to ``"numpy"`` where Numba's kernels cannot run)."""
    if name is not None:
        get_backend(name)
        return name
    try:
        get_backend("numba")
    except BackendUnavailableError:
        return "numpy"
    return "numba"


def build_optimizer(name: str, model: Module, lr: float, weight_decay: float) -> Optimizer:
    if name == "sgd":
        return SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                         weight_decay=weight_decay)
    if name == "adam":
        return Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"build_optimizer: name={name!r} is not supported; expected one of "
                     f"{', '.join(map(repr, OPTIMIZERS))}")


def _toy_parameters(config: TrainConfig, channels: int, classes: int) -> int:
    """The parameters of ``models.ToyNet`` (its layout: stem, three inverted-residual blocks
    of expand ratio 2, classifier), counted from the settings without building it."""
    w, experts = config.width, (config.experts if config.model == "condconv" else 1)
    total = channels * w * 9 + 2 * w                                   # stem conv + BN
    for cin, cout in ((w, w * 3 // 2), (w * 3 // 2, 2 * w), (2 * w, 2 * w)):
        mid = 2 * cin
        total += experts * (cin * mid + 9 * mid + mid * cout)          # expand, depthwise, project
        total += 2 * (mid + mid + cout)                                 # their BatchNorms
        if config.model == "condconv":
            total += cin * experts + experts                            # the block's router
    return total + 2 * w * classes + classes                           # classifier


# float32 values one training image keeps alive during a step, per stem channel and pixel:
# the forward pass saves about 17·w·S² (stem and block 1 at full resolution dominate), the
# backward pass holds their gradients and the 3×3 convolutions' im2col buffers. Measured
# with tracemalloc on the numpy backend, a step of width 16 on 16×16 images, B=64, peaks at
# 36 MB (34 values per channel and pixel; width 32 on 32×32: 33). An estimate to refuse
# impossible runs up front, not a bound.
_ACTIVATION_VALUES_PER_CHANNEL_PIXEL = 40


def estimate_memory(config: TrainConfig) -> dict[str, int]:
    """A rough estimate, in bytes, of what a run of ``config`` holds in memory: the dataset,
    the model with its gradients and optimizer state, and one batch's activations; plus the
    exact parameter count (``"parameters"``)."""
    if config.dataset == "shapes":
        channels, side, images, classes = 1, config.image_size, (config.train_size
                                                                 + config.test_size), 6
    else:
        channels, side, images, classes = 1, 8, 1797, 10
    parameters = _toy_parameters(config, channels, classes)
    estimate = {
        "parameters": parameters,
        "dataset": images * channels * side * side * 4,
        # weights, gradients and up to two optimizer moments, float32
        "model": 4 * parameters * 4,
        # at least 64 images: evaluation runs batches of 256 that save nothing for backward
        "activations": (_ACTIVATION_VALUES_PER_CHANNEL_PIXEL * max(config.batch_size, 64)
                        * config.width * side * side * 4),
    }
    estimate["total"] = estimate["dataset"] + estimate["model"] + estimate["activations"]
    return estimate


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"


def _check_memory(config: TrainConfig) -> None:
    estimate, memory = estimate_memory(config), _physical_memory()
    if memory is not None and estimate["total"] > memory:
        raise ValueError(
            f"train: this run needs about {_format_bytes(estimate['total'])} of memory "
            f"(dataset {_format_bytes(estimate['dataset'])}, model and optimizer "
            f"{_format_bytes(estimate['model'])} for {estimate['parameters']:,} parameters, "
            f"activations {_format_bytes(estimate['activations'])}), more than the "
            f"{_format_bytes(memory)} this machine has; lower --width, --image-size, "
            "--batch-size or --train-size")


LOCK_NAME = "run.lock"
# The files a run writes, each atomically; ``.NAME.*.tmp`` is the temporary file of a save
# killed before its rename (see _files.write_atomic).
RUN_FILES = ("latest.ckpt", "best.ckpt", "metrics.jsonl", "curves.png", "routing.png",
             "routing.json")
_TEMPORARY_PATTERNS = tuple(f".{name}.*.tmp" for name in RUN_FILES) + (".write-test.*.tmp",)


@contextlib.contextmanager
def lock_run_directory(out: Path) -> Iterator[Path]:
    """Create ``out``, take the exclusive lock of its ``run.lock`` (writing this process's
    PID into it), check that files can be written there and remove the temporary files of a
    killed save; the lock is released on exit, or by the kernel if this process dies.

    Raises :class:`RunDirectoryInUse` naming the holder's PID when another run holds it, and
    the ``OSError`` (naming the path) when ``out`` cannot be created or written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                raise RunDirectoryInUse(
                    f"run directory {str(out)!r} is in use by another run (process {holder}); "
                    "wait for it to end or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _check_writable(out)
        for pattern in _TEMPORARY_PATTERNS:
            for stale in out.glob(pattern):
                stale.unlink(missing_ok=True)
        yield out
    finally:
        os.close(fd)   # closing the descriptor releases the lock


def _check_writable(out: Path) -> None:
    """Create and remove a file in ``out``: a read-only directory (or file system) is
    reported now, not after an epoch of training."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=out)
    except OSError as err:
        raise type(err)(err.errno, f"cannot write into the run directory ({err.strerror})",
                        str(out)) from None
    os.close(fd)
    os.unlink(probe)


def _position(epoch: int, position: int) -> str:
    return f"after epoch {epoch}" if position == 0 else f"at epoch {epoch + 1}, batch {position}"


class _StopRequest:
    """Turns the first Ctrl-C into a request to stop after the current step; a second
    Ctrl-C interrupts at once, as usual."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopRequest:
        # Only the main thread may set handlers; a process started with SIGINT ignored
        # (nohup, a background job) keeps ignoring it.
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _progress_bar(total: int, initial: int, desc: str, enabled: bool | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                dynamic_ncols=True, disable=None if enabled is None else not enabled)


def evaluate(model: Module, images: np.ndarray, labels: np.ndarray, backend: str,
             batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) on a labelled set."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    with no_grad():
        for start in range(0, len(labels), batch_size):
            x = tensor(images[start:start + batch_size], backend=backend)
            y = labels[start:start + batch_size]
            logits = model(x)
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.numpy().argmax(axis=1) == y).sum())
    model.train(was_training)
    return total_loss / len(labels), correct / len(labels)


class Trainer:
    """One run: the data, model, optimizer and loader of a config, and their checkpoints."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config.validate()
        self.backend = resolve_backend(config.backend)
        self.out = Path(config.out)
        self.data: Dataset = _load_data(config)
        mc_random.manual_seed(config.seed)
        self.model = build_model(config.model, self.data.image_shape, self.data.num_classes,
                                 experts=config.experts, width=config.width,
                                 backend=self.backend)
        self.optimizer = build_optimizer(config.optimizer, self.model, config.lr,
                                         config.weight_decay)
        self.loader = DataLoader(self.data.train_images, self.data.train_labels,
                                 config.batch_size, shuffle=True, seed=config.seed)
        total = config.epochs * len(self.loader)
        self.schedule = CosineWarmup(self.optimizer, total_steps=total, warmup_steps=min(
            total - 1, int(round(config.warmup_epochs * len(self.loader)))))
        self.history: list[dict[str, Any]] = []
        self.best_accuracy = -1.0
        self.best_step: int | None = None      # the step at which best.ckpt was written
        self.saved: str | None = None          # what latest.ckpt holds, for messages
        self.step = 0
        # Sums over the batches of the current epoch so far, kept across a mid-epoch resume.
        self.epoch_sums = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}

    # --- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": _string_keys(self.optimizer.state_dict()),
            "schedule": self.schedule.state_dict(),
            "loader": self.loader.state_dict(),
            "rng": mc_random.get_state(),
            "step": self.step,
            "epoch": self.loader.epoch,
            "epoch_sums": dict(self.epoch_sums),
            "history": self.history,
            "best_accuracy": self.best_accuracy,
            "best_step": self.best_step,
        }

    def save(self, name: str) -> Path:
        path = save_checkpoint(self.out / name, self.state())
        if name == "latest.ckpt":
            self.saved = f"{str(path)!r} ({_position(self.loader.epoch, self.loader.position)})"
        return path

    def write_metrics(self) -> None:
        """Rewrite metrics.jsonl from the history, which the checkpoint also holds."""
        write_atomic(self.out / "metrics.jsonl",
                     "".join(json.dumps(record) + "\n" for record in self.history).encode())

    def restore(self, path: Path) -> None:
        """Continue from ``path``; a checkpoint of another configuration is refused."""
        state = load_checkpoint(path)
        saved = state.get("config", {})
        mine = self.config.to_dict()
        diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {mine[k]!r}"
                 for k in _RESUME_KEYS if saved.get(k) != mine[k]]
        if diffs:
            raise CheckpointError(f"checkpoint {str(path)!r} was written by a different run "
                                  f"configuration ({'; '.join(diffs)}); resume with the same "
                                  "settings or choose another --out")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            # A run extended with more --epochs stretches its cosine to the new length.
            self.schedule.load_state_dict({**state["schedule"],
                                           "total_steps": self.schedule.total_steps})
            self.loader.load_state_dict(state["loader"])
            mc_random.set_state(state["rng"])
            self.step = int(state["step"])
            self.epoch_sums = dict(state["epoch_sums"])
            self.history = list(state["history"])
            self.best_accuracy = float(state["best_accuracy"])
            self.best_step = state.get("best_step", self._best_step_from_history())
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"checkpoint {str(path)!r} does not fit this model or run: "
                                  f"{err}") from None
        self.saved = f"{str(path)!r} ({_position(self.loader.epoch, self.loader.position)})"

    def _best_step_from_history(self) -> int | None:
        """For a checkpoint that does not record it: the step of the first epoch that reached
        the best accuracy (best.ckpt is written only on a strict improvement)."""
        for record in self.history:
            if record["test_accuracy"] == self.best_accuracy:
                return int(record["epoch"]) * len(self.loader)
        return None

    def repair_best(self, log: Callable[[str], None]) -> None:
        """After a resume, make ``best.ckpt`` hold the best epoch: a crash between the two
        writes of an epoch may have left it behind ``latest.ckpt`` (rewritten from it when
        latest is that epoch) or ahead of it (kept, with its accuracy, so that retraining
        the epoch does not replace it by a worse one)."""
        if self.best_step is None:
            return
        path = self.out / "best.ckpt"
        try:
            best = load_checkpoint(path)
        except CheckpointError:
            best = None
        if best is not None:
            if best.get("step") == self.best_step:
                return
            if float(best.get("best_accuracy", -1.0)) > self.best_accuracy:
                self.best_accuracy = float(best["best_accuracy"])
                self.best_step = int(best["step"])
                return
        if self.best_step == self.step:
            write_atomic(path, (self.out / "latest.ckpt").read_bytes())
            log(f"repaired {path}: it did not hold the best epoch recorded in latest.ckpt, "
                "which is that epoch")
        else:
            log(f"warning: {path} does not hold the best epoch recorded in latest.ckpt and "
                "cannot be rebuilt from it; it is rewritten when the accuracy next improves")

    # --- training -----------------------------------------------------------------------------
    def train_step(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        """One optimizer step on a batch: the batch's loss and number of correct guesses."""
        x = tensor(images, backend=self.backend)
        # A diverging run overflows before its loss turns non-finite; that loss is the one
        # report (NumPy's warnings would otherwise precede it, once per operation).
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            logits = self.model(x)
            loss = F.cross_entropy(logits, labels)
        value = loss.item()
        if not math.isfinite(value):
            kept = (f"The last checkpoint, {self.saved}, is kept" if self.saved is not None
                    else f"no checkpoint was written yet in {str(self.out)!r}")
            raise TrainingError(
                f"the training loss became {value} at epoch {self.loader.epoch + 1}, batch "
                f"{self.loader.position}: stopped; {kept}. A smaller --lr (now "
                f"{self.config.lr}) usually helps")
        self.optimizer.zero_grad()
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss.backward()
            self.optimizer.step()
        self.schedule.step()
        self.step += 1
        correct = int((logits.numpy().argmax(axis=1) == labels).sum())
        return value, correct

    def run_epoch(self, stop: _StopRequest) -> bool:
        """Train the rest of the current epoch; False when stopped by Ctrl-C."""
        epoch = self.loader.epoch
        sums = self.epoch_sums
        bar = _progress_bar(len(self.loader), self.loader.position,
                            f"epoch {epoch + 1}/{self.config.epochs}", self.config.progress)
        self.model.train()
        try:
            for images, labels in self.loader:
                start = time.perf_counter()
                loss, correct = self.train_step(images, labels)
                sums["seconds"] += time.perf_counter() - start
                sums["loss"] += loss * len(labels)
                sums["correct"] += correct
                sums["seen"] += len(labels)
                bar.update(1)
                bar.set_postfix({"loss": f"{sums['loss'] / sums['seen']:.3f}",
                                 "acc": f"{sums['correct'] / sums['seen']:.3f}",
                                 "images/s": f"{sums['seen'] / max(sums['seconds'], 1e-9):.0f}"},
                                refresh=False)
                if stop.requested:
                    return False
        finally:
            bar.close()
        return True

    def finish_epoch(self) -> dict[str, Any]:
        """Evaluate, record the epoch's metrics, and write the checkpoints."""
        sums = self.epoch_sums
        test_loss, test_acc = evaluate(self.model, self.data.test_images,
                                       self.data.test_labels, self.backend)
        record = {
            "epoch": self.loader.epoch,
            "train_loss": sums["loss"] / max(sums["seen"], 1),
            "train_accuracy": sums["correct"] / max(sums["seen"], 1),
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "images_per_second": sums["seen"] / max(sums["seconds"], 1e-9),
            "seconds": sums["seconds"],
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        self.history.append(record)
        self.epoch_sums = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        if test_acc > self.best_accuracy:
            self.best_accuracy, self.best_step = test_acc, self.step
            # best first: a crash before latest.ckpt is written retrains this epoch, and
            # best.ckpt already holds it (repair_best keeps it).
            self.save("best.ckpt")
        self.save("latest.ckpt")
        self.write_metrics()
        return record


def _string_keys(optimizer_state: dict[str, Any]) -> dict[str, Any]:
    """The optimizer's per-parameter state keyed by str(index), as JSON needs (its
    ``load_state_dict`` accepts either)."""
    return {**optimizer_state,
            "state": {str(k): v for k, v in optimizer_state["state"].items()}}


def _load_data(config: TrainConfig) -> Dataset:
    if config.dataset == "shapes":
        return load_dataset("shapes", seed=config.seed, train_size=config.train_size,
                            test_size=config.test_size, image_size=config.image_size)
    return load_dataset("digits", seed=config.seed)


def _format_epoch(record: dict[str, Any], epochs: int) -> str:
    return (f"epoch {record['epoch']:>2}/{epochs}  train loss {record['train_loss']:.4f} "
            f"acc {record['train_accuracy']:.3f}  test loss {record['test_loss']:.4f} "
            f"acc {record['test_accuracy']:.3f}  {record['images_per_second']:.0f} images/s")


def train(config: TrainConfig, resume: bool = False,
          log: Callable[[str], None] = print) -> TrainResult:
    """Run ``config`` (continuing ``config.out/latest.ckpt`` with ``resume``).

    Ctrl-C stops after the current step, saves ``latest.ckpt`` and returns a result with
    status ``"interrupted"``. A non-finite loss raises :class:`TrainingError` and leaves the
    checkpoints of the last completed epoch untouched. Settings that cannot run raise
    ``ValueError``; a run directory that cannot be created or written raises the ``OSError``
    naming it, and one that another run holds raises :class:`RunDirectoryInUse`.
    """
    config.validate()
    if resume and not Path(config.out).is_dir():
        raise CheckpointError(f"--resume: no checkpoint at "
                              f"{str(Path(config.out) / 'latest.ckpt')!r}; start without "
                              "--resume or point --out at an earlier run")
    with lock_run_directory(Path(config.out)):
        return _run(Trainer(config), resume, log)


def _run(trainer: Trainer, resume: bool, log: Callable[[str], None]) -> TrainResult:
    config = trainer.config
    latest = trainer.out / "latest.ckpt"
    if resume:
        if not latest.exists():
            raise CheckpointError(f"--resume: no checkpoint at {str(latest)!r}; start without "
                                  "--resume or point --out at an earlier run")
        trainer.restore(latest)
        trainer.repair_best(log)
        trainer.write_metrics()   # in step with the checkpoint, even if it was ahead
        log(f"resumed from {latest} at epoch {trainer.loader.epoch + 1}, batch "
            f"{trainer.loader.position + 1}")
    status = "finished"
    with _StopRequest() as stop:
        log(f"training {config.model} ({trainer.model.num_parameters():,} parameters) on "
            f"{config.dataset} ({len(trainer.data.train_labels)} train / "
            f"{len(trainer.data.test_labels)} test images), backend {trainer.backend}, "
            f"{config.epochs} epochs -> {trainer.out}")
        while trainer.loader.epoch < config.epochs:
            if not trainer.run_epoch(stop):
                trainer.save("latest.ckpt")
                log(f"interrupted: saved {latest} at epoch {trainer.loader.epoch + 1}, batch "
                    f"{trainer.loader.position}; to continue, run the same command with "
                    "--resume")
                status = "interrupted"
                break
            log(_format_epoch(trainer.finish_epoch(), config.epochs))
    if status == "finished" and config.plots:
        from .plots import write_plots

        note = write_plots(trainer.model, trainer.data, trainer.history, trainer.out,
                           trainer.backend)
        log(note)
    return TrainResult(status=status, epoch=trainer.loader.epoch, history=trainer.history,
                       best_accuracy=max(trainer.best_accuracy, 0.0),
                       parameters=trainer.model.num_parameters(), backend=trainer.backend,
                       out=trainer.out, model=trainer.model,
                       image_shape=trainer.data.image_shape)
