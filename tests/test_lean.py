"""The lean data path of planned evaluation: batches carry an image's pixels only where the feature
cache will first encode it; what the encoders need and was not shipped (evicted) is read then. The
results are the lean path's and the full path's alike, to the bit."""

import json

import pytest

from fssam2.cli import run_cli
from fssam2.data import SyntheticDataModule
from fssam2.plan import shipping
from helpers import TINY

RESULTS = ("miou", "fbiou", "support_gap", "gap_miou_true", "gap_miou_swap", "per_class", "support_mask_iou")


def metrics_of(tmp_path, name: str, *options: str) -> dict:
    run = tmp_path / name
    run_cli(
        ["test", "--config", str(TINY), "--trainer.default_root_dir", str(run), "--data.init_args.shot", "2", *options]
    )
    return json.loads((run / "test_metrics.json").read_text())


def test_each_image_ships_once_at_its_first_encoding_and_the_results_do_not_move(tmp_path):
    full = metrics_of(tmp_path, "full", "--data.init_args.lean_loading", "false")
    lean = metrics_of(tmp_path, "lean")
    small = metrics_of(tmp_path, "small", "--model.feature_cache", "{max_megabytes: 0.3}")  # evicts: reads late
    for result in (lean, small):
        assert {k: result[k] for k in RESULTS} == {k: full[k] for k in RESULTS}
    assert full["images_shipped"] == full["episode_images"] == 3 * (25 + 25)  # 2-shot episodes and their gap items
    assert lean["images_shipped"] == lean["distinct_images"] < full["images_shipped"] and lean["images_read_late"] == 0
    assert small["images_read_late"] > 0 and lean["images_shipped"] < small["images_shipped"] < full["images_shipped"]
    assert lean["image_bytes_shipped"] == lean["images_shipped"] * 3 * 64 * 64  # uint8 at the input size
    uncached = metrics_of(tmp_path, "uncached", "--model.feature_cache", "null")  # no cache: every image ships
    assert uncached["images_shipped"] == uncached["episode_images"] and uncached["miou"] == full["miou"]


@pytest.mark.parametrize("annotation", ["points", "mixed"])
def test_weak_supports_ship_once_too_and_the_results_do_not_move(tmp_path, annotation):
    options = ("--data.init_args.support_annotation", annotation)
    full = metrics_of(tmp_path, "full", *options, "--data.init_args.lean_loading", "false")
    lean = metrics_of(tmp_path, "lean", *options)
    assert {k: lean[k] for k in RESULTS} == {k: full[k] for k in RESULTS}
    # a weak support's features serve each batch that decodes its prompt: its pixels ship once
    assert lean["images_shipped"] == lean["distinct_images"] and lean["images_read_late"] == 0
    assert lean["encoder_passes"] == lean["distinct_images"] == full["encoder_passes"]


def test_shipping_marks_one_slot_per_image_in_the_batch_of_its_first_encoding():
    dm = SyntheticDataModule(fold=0, shot=2, num_workers=0, image_side=64, pool_sizes=(150, 60, 60), batch_size=4)
    dm.image_size = 64
    batches = dm.plan("test").rank_batches(0, 1)
    ship = shipping(batches, "test", 64)
    firsts: dict[str, int] = {}
    for step, (batch, marks) in enumerate(zip(batches, ship, strict=True)):
        for e, mark in zip(batch, marks, strict=True):
            assert len(mark) == len(e.supports) + 1
            for image, shipped in zip((*e.supports, e.query), mark, strict=True):
                if shipped:
                    assert image not in firsts  # once
                    firsts[image] = step
    assert set(firsts) == {i for b in batches for e in b for i in (*e.supports, e.query)}
