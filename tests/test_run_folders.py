"""Run folders keep every run's config and results, and a run that fails before it starts
writes nothing (through the real CLI, with tests/configs/tiny.yaml)."""

import json

import pytest

from fssam2.cli import run_cli
from helpers import TESTS

TINY = str(TESTS / "configs" / "tiny.yaml")
SHORT_FIT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]


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
