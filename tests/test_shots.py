"""Any K: data.train_shots draws each training batch's K from a range (the same K inside a batch),
and a model trained so is tested at any data.shot."""

import json

import pytest
import torch

from fssam2 import InputError
from fssam2.cli import run_cli
from fssam2.data import ShotBatches, SyntheticDataModule
from fssam2.episodes import EpisodeSampler
from helpers import TINY, one_line_error

SMALL = {"fold": 0, "shot": 1, "image_side": 64, "pool_sizes": (600, 60, 60), "batch_size": 4}


def shots_of(num_workers: int, epoch: int = 0) -> list[tuple[int, list[list[str]]]]:
    dm = SyntheticDataModule(**SMALL, num_workers=num_workers, train_shots=(1, 5))
    dm.image_size = 64
    loader = dm.train_dataloader()
    loader.batch_sampler.sampler.set_epoch(epoch)
    out = []
    for n, batch in enumerate(loader):
        k = batch["support_images"].shape[1]
        assert batch["support_masks"].shape[1] == k and all(len(s) == k for s in batch["supports"])
        out.append((k, batch["supports"]))
        if n == 11:
            break
    return out


def test_each_training_batch_draws_its_k_the_same_for_any_workers_and_shows_the_first_k_supports():
    plain = shots_of(0)
    assert [k for k, _ in plain] == [k for k, _ in shots_of(2)] and plain == shots_of(2)
    ks = [k for k, _ in plain]
    assert set(ks) <= {1, 2, 3, 4, 5} and len(set(ks)) >= 3  # drawn per batch, within the range
    assert ks != [k for k, _ in shots_of(0, epoch=1)]  # and anew each epoch
    dm = SyntheticDataModule(**SMALL, num_workers=0, train_shots=(1, 5))
    dm.image_size = 64
    five = dm.dataset("train").shown(0, 0)[1].supports  # the episode's draw: 5 supports
    assert len(five) == 5
    item = dm.dataset("train")[(0, 0, None, 2)]
    assert tuple(item["supports"]) == tuple(five[:2]) and item["support_images"].shape[0] == 2
    samplers = [EpisodeSampler(40, shuffle=True, seed=3, rank=r, world_size=2) for r in (0, 1)]
    per_rank = [[b[0][3] for b in ShotBatches(s, 4, True, (1, 5), 3)] for s in samplers]
    assert per_rank[0] == per_rank[1]  # every process shows the same K at a step (DDP)


def test_bad_train_shots_are_one_line(capsys):
    for value in ("[3, 1]", "[0, 2]", "[1, 2, 3]"):
        one_line_error(capsys, ["fit", "--config", str(TINY), "--data.init_args.train_shots", value], "train_shots")
    with pytest.raises(InputError, match=r"data.train_shots=\[1, 9\] draws training episodes with 9 supports"):
        SyntheticDataModule(**{**SMALL, "pool_sizes": (150, 60, 60)}, train_shots=(1, 9)).dataset("train")


def test_a_model_trained_with_k_drawn_per_batch_tests_at_any_shot(tmp_path):
    run = tmp_path / "run"
    fit = run_cli([
        "fit", "--config", str(TINY), "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "1",
        "--data.init_args.train_shots", "[1, 2]", "--data.init_args.support_annotation", "mixed",
    ])  # fmt: skip
    assert fit.datamodule.train_shots == (1, 2)
    best = run / "checkpoints" / "best.ckpt"
    saved = torch.load(best, map_location="cpu", weights_only=False)
    assert saved["datamodule_hyper_parameters"]["train_shots"] == [1, 2]
    for shot in ("1", "3"):
        out = tmp_path / f"test{shot}"
        run_cli(["test", "--config", str(TINY), "--trainer.default_root_dir", str(out), "--ckpt_path", str(best),
                 "--data.init_args.shot", shot])  # fmt: skip
        assert json.loads((out / "test_metrics.json").read_text())["shot"] == int(shot)
