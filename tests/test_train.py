"""The training loop: it learns, resumes exactly, stops cleanly on Ctrl-C and on a
non-finite loss, refuses checkpoints of other runs, and writes its plots."""

from __future__ import annotations

import builtins
import errno
import json
import os
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest

import minicond as mc
from conftest import backend_available
from minicond import checkpoint as checkpoint_module
from minicond import train as train_module
from minicond.checkpoint import CheckpointError, load_checkpoint
from minicond.train import TrainConfig, Trainer, TrainingError, train


def tiny(tmp_path, **changes) -> TrainConfig:
    """A run of a few seconds: 8×8 shapes, width 4, no progress bar."""
    options = {"epochs": 2, "batch_size": 32, "train_size": 192, "test_size": 96,
               "image_size": 8, "width": 4, "experts": 3, "lr": 0.02, "backend": "numpy",
               "out": str(tmp_path / "run"), "plots": False, "progress": False}
    options.update(changes)
    return TrainConfig(**options)


def quiet(_message: str) -> None:
    pass


@pytest.fixture(autouse=True)
def _ctrl_c_is_delivered():
    """Run each test with Python's usual Ctrl-C handler, also where pytest itself was started
    with SIGINT ignored (a background job), in which case training leaves it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def interrupt_at(monkeypatch, step: int) -> None:
    """Deliver SIGINT (Ctrl-C) during the ``step``-th training step from now."""
    original = Trainer.train_step
    calls = [0]

    def step_then_interrupt(self, images, labels):
        calls[0] += 1
        if calls[0] == step:
            signal.raise_signal(signal.SIGINT)
        return original(self, images, labels)

    monkeypatch.setattr(Trainer, "train_step", step_then_interrupt)


def params(result_dir) -> dict[str, np.ndarray]:
    return load_checkpoint(result_dir / "latest.ckpt")["model"]


@pytest.mark.parametrize("model", ["condconv", "static"])
def test_tiny_runs_learn(tmp_path, model):
    config = tiny(tmp_path, model=model, epochs=5, train_size=480, width=8, lr=0.05)
    result = train(config, log=quiet)
    losses = [h["train_loss"] for h in result.history]
    assert result.status == "finished" and result.epoch == 5
    assert losses[-1] < 0.85 * losses[0]
    assert result.best_accuracy > 1 / 6 + 0.12      # chance is 1/6
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5]
    best = load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert best["history"][-1]["test_accuracy"] == result.best_accuracy


def _cpu_backends() -> list:
    marks = {"numba": pytest.mark.skipif(backend_available("numba") is not None,
                                         reason=str(backend_available("numba")))}
    return [pytest.param(b, marks=marks.get(b, ())) for b in ("numpy", "numba")]


@pytest.mark.parametrize("backend", _cpu_backends())
@pytest.mark.parametrize("stop_step", [6, 5], ids=["epoch-boundary", "mid-epoch"])
def test_resume_gives_the_same_parameters(tmp_path, monkeypatch, backend, stop_step):
    """2 epochs straight == interrupted (after epoch 1, or inside it) and resumed."""
    straight = train(tiny(tmp_path / "a", backend=backend), log=quiet)

    interrupt_at(monkeypatch, stop_step)          # 6 batches of 32 make one epoch
    config = tiny(tmp_path / "b", backend=backend)
    first = train(config, log=quiet)
    assert first.status == "interrupted"
    saved = load_checkpoint(tmp_path / "b" / "run" / "latest.ckpt")
    assert saved["step"] == stop_step
    monkeypatch.undo()
    resumed = train(config, resume=True, log=quiet)
    assert resumed.status == "finished"

    a, b = params(tmp_path / "a" / "run"), params(tmp_path / "b" / "run")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for h_a, h_b in zip(straight.history, resumed.history, strict=True):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert h_a[key] == pytest.approx(h_b[key], rel=1e-12), key


def test_ctrl_c_saves_a_checkpoint_and_returns(tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 3)
    messages: list[str] = []
    handler_before = signal.getsignal(signal.SIGINT)
    result = train(tiny(tmp_path), log=messages.append)
    assert result.status == "interrupted"
    state = load_checkpoint(tmp_path / "run" / "latest.ckpt")
    assert state["loader"]["epoch"] == 0 and state["loader"]["position"] == 3
    assert any("--resume" in m for m in messages)
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny(tmp_path, epochs=3)
    real = mc.functional.cross_entropy
    calls = [0]

    def blows_up_in_epoch_two(logits, labels, **kwargs):  # call 7 is the evaluation
        calls[0] += 1
        loss = real(logits, labels, **kwargs)
        return loss * float("nan") if calls[0] == 8 else loss

    monkeypatch.setattr(train_module.F, "cross_entropy", blows_up_in_epoch_two)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, batch 1"):
        train(config, log=quiet)
    state = load_checkpoint(tmp_path / "run" / "latest.ckpt")
    assert state["epoch"] == 1 and state["step"] == 6
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    monkeypatch.undo()
    assert train(config, resume=True, log=quiet).epoch == 3


def test_resume_refuses_another_configuration(tmp_path):
    train(tiny(tmp_path, epochs=1), log=quiet)
    with pytest.raises(CheckpointError, match=r"different run configuration \(width: "
                                              r"checkpoint 4, now 6\)"):
        train(tiny(tmp_path, epochs=1, width=6), resume=True, log=quiet)


def test_resume_can_extend_a_finished_run(tmp_path):
    train(tiny(tmp_path, epochs=1), log=quiet)
    before = params(tmp_path / "run")
    result = train(tiny(tmp_path, epochs=2), resume=True, log=quiet)
    assert [h["epoch"] for h in result.history] == [1, 2]
    # The cosine now ends after epoch 2 (it had reached 0 after epoch 1), so epoch 2 trains.
    state = load_checkpoint(tmp_path / "run" / "latest.ckpt")
    assert state["schedule"]["total_steps"] == 2 * 6
    after = state["model"]
    assert not np.array_equal(before["classifier.weight"], after["classifier.weight"])


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        train(tiny(tmp_path), resume=True, log=quiet)
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        train(tiny(tmp_path), resume=True, log=quiet)


def test_resume_from_a_damaged_checkpoint_says_so(tmp_path):
    train(tiny(tmp_path, epochs=1), log=quiet)
    path = tmp_path / "run" / "latest.ckpt"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        train(tiny(tmp_path, epochs=1), resume=True, log=quiet)


def test_plots_and_routing_summary(tmp_path):
    pytest.importorskip("matplotlib")
    messages: list[str] = []
    train(tiny(tmp_path, epochs=1, plots=True), log=messages.append)
    run = tmp_path / "run"
    assert (run / "curves.png").stat().st_size > 0 and (run / "routing.png").stat().st_size > 0
    routing = json.loads((run / "routing.json").read_text())
    assert sorted(routing["routers"]) == ["blocks.0.routing_fn", "blocks.1.routing_fn",
                                          "blocks.2.routing_fn"]
    weights = np.array(routing["routers"]["blocks.0.routing_fn"])
    assert weights.shape == (6, 3) and ((weights > 0) & (weights < 1)).all()
    assert any(m.startswith("plots: ") and "curves.png" in m for m in messages)


def test_without_matplotlib_a_note_and_no_crash(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    messages: list[str] = []
    result = train(tiny(tmp_path, epochs=1, plots=True), log=messages.append)
    assert result.status == "finished"
    assert any("matplotlib is not installed" in m for m in messages)
    assert not list((tmp_path / "run").glob("*.png"))
    assert (tmp_path / "run" / "routing.json").exists()


def test_an_ignored_ctrl_c_stays_ignored(tmp_path):
    """Started with SIGINT ignored (nohup, a background job), training does not take it over."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    result = train(tiny(tmp_path), log=quiet)
    assert result.status == "finished"
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def accuracies(monkeypatch, values) -> None:
    """Make the evaluation after epoch e report ``values[e - 1]`` as the test accuracy."""
    calls = [0]

    def evaluate(*args, **kwargs):
        calls[0] += 1
        return 1.0, values[calls[0] - 1]

    monkeypatch.setattr(train_module, "evaluate", evaluate)


def fail_save(monkeypatch, when) -> None:
    """Make the checkpoint write for which ``when(name, state)`` holds fail as a full disk
    does, after the earlier writes succeeded."""
    real = train_module.save_checkpoint

    def save(path, state):
        if when(path.name, state):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, state)

    monkeypatch.setattr(train_module, "save_checkpoint", save)


def test_a_crash_between_the_two_checkpoints_of_an_epoch_loses_no_best(tmp_path, monkeypatch):
    """Whichever of best.ckpt and latest.ckpt is written second at the end of epoch 2 (the
    best one) fails; after a resume, best.ckpt holds epoch 2."""
    accuracies(monkeypatch, [0.3, 0.6, 0.6, 0.4])
    written: list[str] = []

    def second_write_of_epoch_two(name, state):
        if state["epoch"] == 2:
            written.append(name)
        return len(written) == 2

    fail_save(monkeypatch, second_write_of_epoch_two)
    with pytest.raises(OSError, match="No space left"):
        train(tiny(tmp_path, epochs=3), log=quiet)
    monkeypatch.setattr(train_module, "save_checkpoint", checkpoint_module.save_checkpoint)
    result = train(tiny(tmp_path, epochs=3), resume=True, log=quiet)
    assert result.best_accuracy == 0.6
    best = load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert best["epoch"] == 2 and best["history"][-1]["test_accuracy"] == 0.6


def test_resume_repairs_a_best_checkpoint_left_behind_by_a_crash(tmp_path, monkeypatch):
    """latest.ckpt records epoch 2 as the best, best.ckpt still holds epoch 1 (a crash between
    the two writes): resume rewrites best.ckpt from latest.ckpt."""
    accuracies(monkeypatch, [0.3, 0.6])
    run = tmp_path / "run"
    train(tiny(tmp_path, epochs=1), log=quiet)
    old_best = (run / "best.ckpt").read_bytes()
    train(tiny(tmp_path, epochs=2), resume=True, log=quiet)
    (run / "best.ckpt").write_bytes(old_best)
    messages: list[str] = []
    train(tiny(tmp_path, epochs=2), resume=True, log=messages.append)
    assert load_checkpoint(run / "best.ckpt")["epoch"] == 2
    assert any("best.ckpt" in m and "repaired" in m for m in messages)


def test_stale_temporary_files_are_removed_at_start(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = [".latest.ckpt.k2j4h1.tmp", ".best.ckpt.abc.tmp", ".metrics.jsonl.x1.tmp",
             ".routing.json.q.tmp", ".curves.png.r.tmp"]
    for name in stale + ["notes.tmp", ".other.tmp"]:
        (run / name).write_bytes(b"partial")
    train(tiny(tmp_path, epochs=1), log=quiet)
    names = {p.name for p in run.iterdir()}
    assert not names & set(stale)
    assert {"notes.tmp", ".other.tmp", "latest.ckpt", "metrics.jsonl"} <= names


def test_a_full_disk_keeps_metrics_in_step_with_the_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    fail_save(monkeypatch, lambda name, state: name == "latest.ckpt" and state["epoch"] == 2)
    with pytest.raises(OSError, match="No space left") as error:
        train(tiny(tmp_path, epochs=3), log=quiet)
    assert error.value.filename == str(run / "latest.ckpt")
    assert load_checkpoint(run / "latest.ckpt")["epoch"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    monkeypatch.undo()
    # A metrics file ahead of the checkpoint (as an older version could leave it) is put back
    # in step as soon as a run resumes, even one interrupted before its first epoch ends.
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2}\n')
    interrupt_at(monkeypatch, 2)
    assert train(tiny(tmp_path, epochs=3), resume=True, log=quiet).status == "interrupted"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_second_run_on_the_same_directory_is_refused(tmp_path):
    config = tiny(tmp_path, epochs=1)
    with train_module.lock_run_directory(tmp_path / "run"):    # as a run in progress holds it
        with pytest.raises(train_module.RunDirectoryInUse,
                           match=rf"'{tmp_path / 'run'}' is in use by another run \(process "
                                 rf"{os.getpid()}\)"):
            train(config, log=quiet)
        assert not (tmp_path / "run" / "latest.ckpt").exists()
    assert train(config, log=quiet).status == "finished"        # released with its holder


def test_a_read_only_run_directory_fails_before_training(tmp_path, monkeypatch):
    train(tiny(tmp_path, epochs=1), log=quiet)
    run = tmp_path / "run"
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == run:
            raise PermissionError(errno.EACCES, "Permission denied", str(run / "tmpxyz"))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(Trainer, "train_step", lambda *a: pytest.fail("trained a step"))
    with pytest.raises(PermissionError) as error:
        train(tiny(tmp_path, epochs=2), resume=True, log=quiet)
    assert error.value.filename == str(run)


def test_non_finite_loss_in_the_first_epoch_says_nothing_was_saved(tmp_path, monkeypatch):
    real = mc.functional.cross_entropy
    monkeypatch.setattr(train_module.F, "cross_entropy",
                        lambda *a, **k: real(*a, **k) * float("inf"))
    with pytest.raises(TrainingError, match="no checkpoint was written yet") as error:
        train(tiny(tmp_path), log=quiet)
    assert "kept" not in str(error.value)


@pytest.mark.parametrize("changes, message", [
    ({"lr": float("inf")}, r"lr=inf must be in \(0\.0, inf\)"),
    ({"weight_decay": float("inf")}, r"weight_decay=inf must be in \[0\.0, inf\)"),
    ({"out": ""}, r"out='' must name a run directory"),
    ({"width": 100000}, r"needs about [\d.]+ [TPG]B of memory .*more than the [\d.]+ [GMT]B"),
    ({"image_size": 100000}, r"needs about [\d.]+ [TPGE]B of memory .*more than the [\d.]+ "),
])
def test_impossible_settings_are_refused_before_anything_is_built(tmp_path, monkeypatch,
                                                                  changes, message):
    monkeypatch.setattr(train_module, "_load_data", lambda c: pytest.fail("data loaded"))
    with pytest.raises(ValueError, match=message):
        train(tiny(tmp_path, **changes), log=quiet)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", ["condconv", "static"])
@pytest.mark.parametrize("width, experts", [(4, 1), (6, 3), (16, 4)])
def test_the_memory_estimate_counts_the_parameters_of_the_model(tmp_path, model, width,
                                                                experts):
    config = tiny(tmp_path, model=model, width=width, experts=experts)
    built = Trainer(config).model.num_parameters()
    assert train_module.estimate_memory(config)["parameters"] == built
