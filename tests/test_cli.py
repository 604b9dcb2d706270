"""The ``minicond`` command: argument errors, train/compare end to end on tiny settings,
and the commands the README shows."""

from __future__ import annotations

import builtins
import errno
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from minicond import _files, cli
from minicond.checkpoint import load_checkpoint
from minicond.cli import build_parser, main
from minicond.train import Trainer

ROOT = Path(__file__).parents[1]
TINY = ["--train-size", "96", "--test-size", "48", "--image-size", "8", "--width", "4",
        "--experts", "2", "--batch-size", "32", "--backend", "numpy", "--no-progress"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["train", "--epochs", "two"], "argument --epochs: 'two' is not a valid int"),
    (["train", "--lr", "0"], "--lr must be > 0.0, got 0"),
    (["train", "--lr", "nan"], "--lr must be > 0.0, got nan"),
    (["train", "--batch-size", "-4"], "--batch-size must be >= 1, got -4"),
    (["train", "--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
    (["train", "--dataset", "mnist"], "argument --dataset: invalid choice: 'mnist'"),
    (["train", "--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'"),
    (["train", "--backend", "tpu"], "argument --backend: invalid choice: 'tpu'"),
    (["train", "--image-size", "4"], "--image-size must be >= 8, got 4"),
    (["train", "--lr", "inf"], "--lr must be finite, got inf"),
    (["train", "--weight-decay", "inf"], "--weight-decay must be finite, got inf"),
    (["compare", "--weight-decay", "inf"], "--weight-decay must be finite, got inf"),
    (["compare", "--resume"], "unrecognized arguments: --resume"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_argument_errors_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "compare"])
def test_an_empty_out_is_an_error(tmp_path, monkeypatch, command, capsys):
    """Not the default directory: ``--out ""`` is refused before anything runs."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--out", "", "--epochs", "1", "--no-plots", *TINY])
    assert exit_info.value.code == 2
    assert "argument --out: must not be empty" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().out


def test_train_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--no-plots", *TINY]) == 0
    assert "done: test accuracy" in capsys.readouterr().out
    assert main(["train", "--epochs", "2", "--out", str(out), "--no-plots", "--resume",
                 *TINY]) == 0
    text = capsys.readouterr().out
    assert "resumed from" in text and "epoch  2/2" in text
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_train_errors_exit_2_with_a_message(tmp_path, capsys):
    out = tmp_path / "nothing"
    assert main(["train", "--out", str(out), "--resume", *TINY]) == 2
    assert f"minicond train: error: --resume: no checkpoint at '{out / 'latest.ckpt'}'" in (
        capsys.readouterr().err)


def test_compare_prints_both_models_side_by_side(tmp_path, capsys):
    assert main(["compare", "--epochs", "1", "--out", str(tmp_path), "--no-plots",
                 *TINY]) == 0
    table = capsys.readouterr().out.strip().splitlines()[-3:]
    assert table[0].split() == ["model", "test", "acc", "best", "acc", "parameters",
                                "MACs/image", "train", "images/s"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert set(rows) == {"condconv", "static"}
    params = {m: int(r[3].replace(",", "")) for m, r in rows.items()}
    macs = {m: int(r[4].replace(",", "")) for m, r in rows.items()}
    assert params["condconv"] > params["static"]            # E experts per layer
    assert macs["static"] < macs["condconv"] < 1.3 * macs["static"]
    assert (tmp_path / "condconv" / "latest.ckpt").exists()
    assert (tmp_path / "static" / "latest.ckpt").exists()


def test_explain_is_a_subcommand_when_present():
    explain = pytest.importorskip("minicond.explain")
    if not hasattr(explain, "register"):
        pytest.skip("minicond.explain has no register()")
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--help"])
    assert exit_info.value.code == 0


def test_python_dash_m_runs_the_same_command():
    done = subprocess.run([sys.executable, "-m", "minicond", "train", "--epochs", "0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert "--epochs must be >= 1" in done.stderr


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [part.strip() for line in lines for part in line.split("&&")
            if part.strip().startswith("minicond")]


def test_readme_shows_the_main_commands():
    text = (ROOT / "README.md").read_text()
    assert "pip install -e . && minicond train" in text
    assert 'pip install -e ".[test]" && pytest' in text
    commands = _readme_commands()
    for needed in ("minicond train", "minicond compare", "--resume"):
        assert any(needed in c for c in commands), needed


@pytest.mark.parametrize("command", _readme_commands() or ["minicond train"])
def test_readme_commands_parse(command):
    """Every ``minicond`` command in the README is accepted by the parser as written."""
    argv = shlex.split(command)[1:]
    if "--help" in argv:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(argv)
        assert exit_info.value.code == 0
        return
    args = build_parser().parse_args(argv)
    assert args.func in (cli.run_train, cli.run_compare) or args.command in ("explain",
                                                                           "predict")


def test_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'minicond = "minicond.cli:main"' in text
    assert 'data = ["scikit-learn"]' in text
    # matplotlib is a default dependency, so the first `minicond train` draws its plots
    dependencies = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert '"matplotlib' in dependencies


def test_ctrl_c_in_a_real_process_saves_and_exits_130(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "minicond", "train", "--epochs", "200", "--out", str(out),
               "--no-plots", *TINY]
    # As in a terminal: Ctrl-C is delivered even when this test runs with SIGINT ignored
    # (a background job), which the child would otherwise inherit.
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first_line = process.stdout.readline()          # printed once Ctrl-C is handled
        assert first_line.startswith("training condconv"), first_line
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted: saved" in stdout and "--resume" in stdout
    state = load_checkpoint(out / "latest.ckpt")
    assert state["step"] >= 1


def test_digits_dataset(tmp_path, capsys):
    pytest.importorskip("sklearn")
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path),
                 "--no-plots", "--width", "4", "--backend", "numpy", "--no-progress"]) == 0
    assert "on digits (1438 train / 359 test images)" in capsys.readouterr().out


def test_digits_without_scikit_learn_exits_2_saying_what_to_install(tmp_path, monkeypatch,
                                                                    capsys):
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    assert main(["train", "--dataset", "digits", "--out", str(tmp_path), *TINY]) == 2
    assert 'needs scikit-learn' in capsys.readouterr().err


def one_line_error(capsys, argv, status=2) -> str:
    """Run ``argv``; it must exit with ``status`` and print one line on stderr, no traceback."""
    assert main(argv) == status
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_out_that_is_a_file_or_under_one(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    err = one_line_error(capsys, ["train", "--out", str(file), *TINY])
    assert err == f"minicond train: error: {file}: File exists"
    err = one_line_error(capsys, ["compare", "--out", str(file / "sub"), *TINY])
    assert err.startswith("minicond compare: error: ") and str(file) in err
    assert "Not a directory" in err
    assert file.read_text() == "mine"


def test_a_read_only_out_fails_before_training(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--no-plots", *TINY]) == 0
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == out:
            raise PermissionError(errno.EACCES, "Permission denied", str(out / "tmpxyz"))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(Trainer, "train_step", lambda *a: pytest.fail("trained a step"))
    capsys.readouterr()
    err = one_line_error(capsys, ["train", "--epochs", "2", "--out", str(out), "--resume",
                                  "--no-plots", *TINY])
    assert err == (f"minicond train: error: {out}: cannot write into the run directory "
                   "(Permission denied)")


def test_a_full_disk_while_saving(tmp_path, monkeypatch, capsys):
    def full(f, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_files, "_write_all", full)
    out = tmp_path / "run"
    err = one_line_error(capsys, ["train", "--epochs", "1", "--out", str(out), *TINY])
    assert err == f"minicond train: error: {out / 'best.ckpt'}: No space left on device"


@pytest.mark.parametrize("option", ["--width", "--image-size"])
def test_a_run_too_big_for_the_memory_is_refused_up_front(tmp_path, capsys, option):
    err = one_line_error(capsys, ["train", "--out", str(tmp_path / "run"), *TINY, option,
                                  "100000"])
    assert re.search(r"needs about [\d.]+ [TPE]B of memory \(dataset .*more than the", err)
    assert not (tmp_path / "run").exists()


def test_memory_error_is_one_line(tmp_path, monkeypatch, capsys):
    def out_of_memory(*args):
        raise MemoryError

    monkeypatch.setattr(Trainer, "train_step", out_of_memory)
    err = one_line_error(capsys, ["train", "--out", str(tmp_path / "run"), *TINY])
    assert err.startswith("minicond train: error: out of memory")


def test_a_non_finite_loss_exits_1_and_tells_which_checkpoint_is_kept(tmp_path, capsys):
    out = tmp_path / "run"
    err = one_line_error(capsys, ["train", "--lr", "1e30", "--out", str(out), "--no-plots",
                                  *TINY], status=1)
    assert "stopped; no checkpoint was written yet in" in err and "kept" not in err
    assert not (out / "latest.ckpt").exists()


def test_latest_checkpoint_that_is_a_directory(tmp_path, capsys):
    latest = tmp_path / "run" / "latest.ckpt"
    latest.mkdir(parents=True)
    err = one_line_error(capsys, ["train", "--out", str(tmp_path / "run"), "--resume", *TINY])
    assert err.endswith(f"checkpoint '{latest}' is a directory, not a checkpoint file")
    err = one_line_error(capsys, ["train", "--epochs", "1", "--out", str(tmp_path / "run"),
                                  "--no-plots", *TINY])
    assert err == f"minicond train: error: {latest}: Is a directory"


def test_a_second_run_on_the_same_out_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from minicond.train import "
         "lock_run_directory\nwith lock_run_directory(sys.argv[1]):\n print('locked', "
         "flush=True); time.sleep(60)", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = one_line_error(capsys, ["train", "--out", str(out), *TINY])
        assert f"is in use by another run (process {holder.pid})" in err
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the lock of the killed holder.
    assert main(["train", "--epochs", "1", "--out", str(out), "--no-plots", *TINY]) == 0


def test_the_readme_lists_the_exit_statuses():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Exit statuses"):]
    section = section[:section.index("\n## ", 1)]
    rows = dict(re.findall(r"^\| `?(\d+)`? \| (.+?) \|$", section, flags=re.M))
    assert set(rows) == {"0", "1", "2", "130"}
    assert (cli.EXIT_DONE, cli.EXIT_STOPPED, cli.EXIT_BAD_INPUT, cli.EXIT_INTERRUPTED) == (
        0, 1, 2, 130)
    assert "non-finite" in rows["1"] and "interrupted" in rows["130"].lower()
