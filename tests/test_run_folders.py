"""Run folders keep every run's config and results, and a run that fails before it starts
writes nothing (through the real CLI, with tests/configs/tiny.yaml)."""

import json

import pytest
import torch

from fssam2.cli import run_cli
from helpers import TESTS, one_line_error

TINY = str(TESTS / "configs" / "tiny.yaml")
# 2 batches each (a limit of 1 would read as 1.0: every batch).
SHORT_FIT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]


def cli(*args):
    return run_cli([args[0], "--config", TINY, *args[1:]])


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.slow
def test_later_runs_keep_earlier_configs_and_results(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first_config = "# the first fit's config, which the README's resume command reads\n"
    (run_dir / "config.yaml").write_text(first_config)

    # A fit failing at start (no data root) exits 2 and writes nothing, W&B included.
    with pytest.raises(SystemExit) as exit_:
        cli(
            "fit",
            "--trainer.default_root_dir", str(run_dir),
            "--data", "fssam2.benchmarks.FolderDataModule", "--data.root", str(tmp_path / "missing"),
            "--trainer.logger", "lightning.pytorch.loggers.WandbLogger", "--trainer.logger.offline", "true",
        )  # fmt: skip
    assert exit_.value.code == 2 and "missing" in capsys.readouterr().err
    assert files(run_dir) == ["config.yaml"] and (run_dir / "config.yaml").read_text() == first_config

    # A second fit keeps the first config and saves its own beside it.
    cli("fit", "--trainer.default_root_dir", str(run_dir), *SHORT_FIT)
    assert (run_dir / "config.yaml").read_text() == first_config
    assert "max_epochs: 1" in (run_dir / "config-1.yaml").read_text()

    # The README's 1-shot then K-shot tests in one folder: both results and configs survive.
    for shot in ("1", "3"):
        cli("test", "--trainer.default_root_dir", str(run_dir), "--data.init_args.test_episodes", "4",
            "--data.init_args.shot", shot)  # fmt: skip
    one, five = (json.loads((run_dir / name).read_text()) for name in ("test_metrics.json", "test_metrics-1.json"))
    assert (one["shot"], one["config"]) == (1, "test_config.yaml")
    assert (five["shot"], five["config"]) == (3, "test_config-1.yaml")
    assert "shot: 1" in (run_dir / "test_config.yaml").read_text()
    assert "shot: 3" in (run_dir / "test_config-1.yaml").read_text()
    assert not list(run_dir.glob(".*.tmp"))


@pytest.mark.slow
def test_fit_removes_the_temporary_file_of_a_killed_save(tmp_path):
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    # SIGKILL right after AtomicCheckpointIO opened its file, and halfway through another save;
    # names this fit does not save to, so only the clean-up at its start removes them.
    (checkpoints / ".last-v1.ckpt.tmp").write_bytes(b"")
    (checkpoints / ".epoch=3-step=8.ckpt.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")
    (checkpoints / "notes.tmp").write_text("not ours")
    cli("fit", "--trainer.default_root_dir", str(run_dir), *SHORT_FIT)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt", "notes.tmp"]


@pytest.mark.slow
def test_last_checkpoint_follows_every_epoch_between_validations(tmp_path):
    """With check_val_every_n_epoch 4 (as configs/demo.yaml), last.ckpt is saved after every
    epoch all the same, and a fit that crashed after epoch 0 resumes from it to the very weights of
    an uninterrupted fit."""
    rare_val = ["--trainer.check_val_every_n_epoch", "4", "--trainer.limit_train_batches", "2"]
    whole = tmp_path / "whole"
    cli("fit", "--trainer.default_root_dir", str(whole), "--trainer.max_epochs", "2", *rare_val)
    last = torch.load(whole / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (1, 4)
    assert sorted(p.name for p in (whole / "checkpoints").iterdir()) == ["last.ckpt"]  # no validation ran yet

    # The same fit crashing at the start of epoch 1 keeps epoch 0's state, and resumes from it.
    stopped = tmp_path / "stopped"
    crash = {"class_path": "killpoint.Crash", "init_args": {"epoch": 1, "batch": 0}}
    with pytest.raises(RuntimeError, match="crash at epoch 1"):
        cli("fit", "--trainer.default_root_dir", str(stopped), "--trainer.max_epochs", "2", *rare_val,
            "--trainer.callbacks+=" + json.dumps(crash))  # fmt: skip
    first = torch.load(stopped / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (first["epoch"], first["global_step"]) == (0, 2)
    resumed = cli(
        "fit",
        "--trainer.default_root_dir", str(stopped), "--trainer.max_epochs", "2", *rare_val,
        "--ckpt_path", str(stopped / "checkpoints" / "last.ckpt"),
    )  # fmt: skip
    assert resumed.trainer.global_step == 4
    again = torch.load(stopped / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert again["state_dict"].keys() == last["state_dict"].keys()
    for name, weights in last["state_dict"].items():
        assert torch.equal(weights, again["state_dict"][name]), name


@pytest.mark.slow
def test_a_fit_names_its_files_and_a_second_fit_beside_it_is_refused(tmp_path, monkeypatch, capsys):
    """The run ends with the files it wrote and its best checkpoint; a new fit into a folder that
    holds one is refused (it would write best-v1.ckpt beside the first run's best.ckpt) unless it
    resumes; results record absolute paths whatever the shell's folder."""
    run_dir = tmp_path / "run"
    fit = cli("fit", "--trainer.default_root_dir", str(run_dir), *SHORT_FIT)
    best = run_dir / "checkpoints" / "best.ckpt"
    score = fit.trainer.checkpoint_callback.best_model_score.item()
    assert capsys.readouterr().out.splitlines()[-3:] == [
        f"fssam2 fit: run folder {run_dir}",
        "  wrote checkpoints/best.ckpt, checkpoints/last.ckpt, config.yaml",
        f"  best checkpoint (val/miou {score:.4f}): {best}",
    ]
    written = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}

    one_line_error(
        capsys,
        ["fit", "--config", TINY, "--trainer.default_root_dir", str(run_dir), *SHORT_FIT],
        f"holds a fit already (best.ckpt, last.ckpt): resume it with --ckpt_path {run_dir / 'checkpoints' / 'last.ckpt'}",
    )
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == written

    # Resuming it is a fit of the same run: it goes on writing best.ckpt and last.ckpt.
    cli("fit", "--trainer.default_root_dir", str(run_dir), *SHORT_FIT, "--trainer.max_epochs", "2",
        "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"))  # fmt: skip
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    wrote = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  wrote "))
    assert (
        "checkpoints/last.ckpt" in wrote
        and "config-1.yaml" in wrote.split(", ")
        and "config.yaml" not in wrote.split(", ")
    )

    # From another folder, with relative paths: test_metrics.json holds absolute ones.
    monkeypatch.chdir(run_dir)
    cli("test", "--trainer.default_root_dir", "tests", "--ckpt_path", "checkpoints/best.ckpt",
        "--data.init_args.test_episodes", "4")  # fmt: skip
    results = json.loads((run_dir / "tests" / "test_metrics.json").read_text())
    assert results["ckpt_path"] == str(best) and results["config"] == "test_config.yaml"
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"fssam2 test: run folder {run_dir / 'tests'}",
        "  wrote test_config.yaml, test_metrics.json",
    ]
