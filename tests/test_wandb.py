"""W&B, the dashboards researchers compare methods in: each run is grouped by benchmark, fold and
shot and tagged with its method and setting, so one workspace shows the methods side by side."""

import time

import pytest
import wandb

from fssam2.cli import run_cli
from helpers import TINY

WANDB = ["--trainer.logger", "lightning.pytorch.loggers.WandbLogger", "--trainer.logger.offline", "true"]


def record_of(run) -> bytes:
    wandb.finish()  # flush the offline run to disk
    (offline,) = (run / "wandb").glob("offline-run-*")
    (record,) = offline.glob("run-*.wandb")  # an offline run keeps its config, group and tags in its record
    return record.read_bytes()


@pytest.mark.slow
def test_a_run_is_grouped_by_fold_and_shot_and_tagged_with_its_method_and_setting(tmp_path):
    run = tmp_path / "run"
    run_cli(["test", "--config", str(TINY), "--trainer.default_root_dir", str(run), *WANDB,
             "--data.init_args.shot", "2", "--data.init_args.support_annotation", "points"])  # fmt: skip
    logged = record_of(run)
    for label in (b"synthetic-fold0-2shot", b"FewShotSAM2", b"fold0", b"2-shot", b"support:points"):
        assert label in logged, label
    own = tmp_path / "own"
    run_cli(["test", "--config", str(TINY), "--trainer.default_root_dir", str(own), *WANDB,
             "--trainer.logger.init_args.group", "my-sweep", "--model.method", "fssam2.methods.SANSA"])  # fmt: skip
    logged = record_of(own)
    assert b"my-sweep" in logged and b"synthetic-fold0-1shot" not in logged  # the user's group is kept
    assert b"SANSA" in logged and b"support:mask" in logged


@pytest.mark.slow
def test_a_fit_logs_its_adapter_as_an_artifact_and_keeps_an_earlier_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter.safetensors").write_text("a file of the user's")
    run_cli(["fit", "--config", str(TINY), "--trainer.default_root_dir", str(run), *WANDB,
             "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"])  # fmt: skip
    assert (run / "adapter.safetensors").read_text() == "a file of the user's"
    logged = record_of(run)
    (offline,) = (run / "wandb").glob("offline-run-*")
    name = f"adapter-{offline.name.rpartition('-')[2]}".encode()  # the artifact, named after the run
    for _ in range(50):  # W&B's writer process may add the artifact's record after finish() returns
        if name in logged:
            break
        time.sleep(0.2)
        logged = next(offline.glob("run-*.wandb")).read_bytes()
    assert name in logged and b"fssam2-adapter/1" in logged  # with the adapter's metadata
    from fssam2.segment import Segmenter

    assert Segmenter.from_pretrained(None, run / "adapter-1.safetensors", device="cpu").model is not None
