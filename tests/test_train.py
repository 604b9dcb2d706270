"""The training loop: it learns, resumes exactly, stops cleanly on Ctrl-C and on a
non-finite loss, refuses checkpoints of other runs, and writes its plots."""

from __future__ import annotations

import builtins
import json
import signal

import numpy as np
import pytest

import minicond as mc
from conftest import backend_available
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
    assert sorted(routing["routers"]) == ["blocks.0.routing", "blocks.1.routing",
                                          "blocks.2.routing"]
    weights = np.array(routing["routers"]["blocks.0.routing"])
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
