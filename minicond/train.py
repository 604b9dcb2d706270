"""The training loop behind ``minicond train`` and ``minicond compare``.

Layer: top, beside ``cli.py``. One :class:`TrainConfig` says what to train; :func:`train` runs
it and writes, into ``config.out``:

* ``latest.ckpt`` after every epoch (and on Ctrl-C), ``best.ckpt`` when the test accuracy
  improves: model, optimizer, loader position, random generator, epoch and metrics, written
  atomically (``checkpoint.py``);
* ``metrics.jsonl``, one line per epoch;
* ``curves.png`` and ``routing.png`` when matplotlib is installed (``plots.py``), and
  ``routing.json``, the mean routing weights per class of every CondConv router.

``resume=True`` restores ``latest.ckpt`` and continues with the very batch that would have
come next: the loader's order depends only on (seed, epoch), and the generator that draws
dropout masks is restored, so 2 epochs straight and 1 + resume 1 give the same parameters.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import functional as F
from . import random as mc_random
from .autograd import no_grad
from .backends import BackendUnavailableError, get_backend
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import DATASETS, DataLoader, Dataset, load_dataset
from .models import MODELS, build_model
from .nn import Module
from .optim import SGD, Adam, AdamW, CosineWarmup, Optimizer
from .tensor import tensor

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


class TrainingError(RuntimeError):
    """Training stopped (a non-finite loss, or a checkpoint that does not fit the run)."""


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
        if config.model not in MODELS:
            raise ValueError(f"train: model={config.model!r}; expected one of {MODELS}")
        if config.dataset not in DATASETS:
            raise ValueError(f"train: dataset={config.dataset!r}; expected one of {DATASETS}")
        if config.optimizer not in OPTIMIZERS:
            raise ValueError(f"train: optimizer={config.optimizer!r}; expected one of "
                             f"{OPTIMIZERS}")
        self.config = config
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
        }

    def save(self, name: str) -> Path:
        return save_checkpoint(self.out / name, self.state())

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
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"checkpoint {str(path)!r} does not fit this model or run: "
                                  f"{err}") from None

    # --- training -----------------------------------------------------------------------------
    def train_step(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        """One optimizer step on a batch: the batch's loss and number of correct guesses."""
        x = tensor(images, backend=self.backend)
        logits = self.model(x)
        loss = F.cross_entropy(logits, labels)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(
                f"the training loss became {value} at epoch {self.loader.epoch + 1}, batch "
                f"{self.loader.position}: stopped. The last good checkpoint is kept in "
                f"{str(self.out)!r}; a smaller --lr (now {self.config.lr}) usually helps")
        self.optimizer.zero_grad()
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
        improved = test_acc > self.best_accuracy
        if improved:
            self.best_accuracy = test_acc
        _write_metrics(self.out / "metrics.jsonl", self.history)
        self.save("latest.ckpt")
        if improved:
            self.save("best.ckpt")
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


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the whole file from the history, which the checkpoint also holds: after a
    resume, metrics.jsonl matches the checkpoint exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in history))


def _format_epoch(record: dict[str, Any], epochs: int) -> str:
    return (f"epoch {record['epoch']:>2}/{epochs}  train loss {record['train_loss']:.4f} "
            f"acc {record['train_accuracy']:.3f}  test loss {record['test_loss']:.4f} "
            f"acc {record['test_accuracy']:.3f}  {record['images_per_second']:.0f} images/s")


def train(config: TrainConfig, resume: bool = False,
          log: Callable[[str], None] = print) -> TrainResult:
    """Run ``config`` (continuing ``config.out/latest.ckpt`` with ``resume``).

    Ctrl-C stops after the current step, saves ``latest.ckpt`` and returns a result with
    status ``"interrupted"``. A non-finite loss raises :class:`TrainingError` and leaves the
    checkpoints of the last completed epoch untouched.
    """
    trainer = Trainer(config)
    latest = trainer.out / "latest.ckpt"
    if resume:
        if not latest.exists():
            raise CheckpointError(f"--resume: no checkpoint at {str(latest)!r}; start without "
                                  "--resume or point --out at an earlier run")
        trainer.restore(latest)
        log(f"resumed from {latest} at epoch {trainer.loader.epoch + 1}, batch "
            f"{trainer.loader.position + 1}")
    trainer.out.mkdir(parents=True, exist_ok=True)
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
