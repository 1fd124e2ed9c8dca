"""Weak support annotations (`data.support_annotation`): points, a box and a scribble drawn from
each support's mask, deterministically from the episode; decoded without memory, as SAM2's video
predictor takes a prompted frame, before the supports' memories are made."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import wandb
from PIL import Image

from fssam2 import InputError
from fssam2.annotations import (
    BOX_LABELS,
    PAD_LABEL,
    annotate,
    annotation_rng,
    box_of,
    sample_points,
    scribble_of,
    support_kind,
)
from fssam2.cli import run_cli
from fssam2.data import SyntheticDataModule, collate_episodes
from fssam2.episodes import EVAL_EPOCH
from fssam2.methods import FewShotSAM2
from fssam2.methods.features import SAM2Method
from fssam2.segment import mark_prompt
from helpers import TINY, one_line_error

SMALL = {"fold": 0, "shot": 2, "num_workers": 0, "image_side": 64, "pool_sizes": (150, 60, 60), "batch_size": 4}


def blob_mask(seed: int = 0, size: int = 96) -> np.ndarray:
    """Two discs and a bar: three components, one of them small."""
    yy, xx = np.mgrid[:size, :size]
    rng = np.random.default_rng(seed)
    cx, cy = rng.integers(25, 45, size=2)
    mask = (xx - cx) ** 2 + (yy - cy) ** 2 < 15**2
    mask |= (xx - 75) ** 2 + (yy - 75) ** 2 < 6**2
    mask[5:8, 60:90] = True
    return mask


def test_points_are_distinct_mask_pixels_twenty_in_evaluation_one_to_twenty_in_training():
    mask = blob_mask()
    points = sample_points(mask, np.random.default_rng(1), train=False)
    assert points.shape == (20, 2) and len({tuple(p) for p in points.tolist()}) == 20
    assert mask[points[:, 1].astype(int), points[:, 0].astype(int)].all()  # (x, y): inside the mask
    assert np.array_equal(points, sample_points(mask, np.random.default_rng(1), train=False))  # fixed for a seed
    assert not np.array_equal(points, sample_points(mask, np.random.default_rng(2), train=False))
    counts = {len(sample_points(mask, np.random.default_rng(s), train=True)) for s in range(60)}
    assert min(counts) >= 1 and max(counts) <= 20 and len(counts) > 5  # drawn, within SANSA's 1..20
    tiny = np.zeros_like(mask)
    tiny[3, 4] = tiny[10, 11] = True
    assert sorted(sample_points(tiny, np.random.default_rng(0), train=False).tolist()) == [[4, 3], [11, 10]]
    assert sample_points(np.zeros_like(mask), np.random.default_rng(0), train=False).shape == (0, 2)


def test_the_box_is_the_largest_merged_components_box_one_past_the_last_pixel():
    mask = np.zeros((50, 60), bool)
    mask[10:20, 5:15] = True  # 10 x 10
    mask[30:45, 30:52] = True  # 15 x 22: the largest
    assert box_of(mask).tolist() == [30, 30, 52, 45]
    # An L whose box overlaps a small blob inside it: they merge into one box, which then wins.
    mask[2:8, 40:42] = True
    mask[2:4, 40:58] = True
    mask[5:7, 50:52] = True  # a separate component inside the L's box
    merged = box_of(mask)
    assert merged.tolist() == [30, 30, 52, 45]  # 22 x 15 = 330 still beats the L's 18 x 6
    single = np.zeros((50, 60), bool)
    single[4:9, 7:33] = True
    assert box_of(single).tolist() == [7, 4, 33, 9]
    diagonal = np.eye(6, dtype=bool)  # 4-connectivity: six one-pixel components, merged by no overlap
    assert box_of(diagonal).tolist() == [0, 0, 1, 1]
    coords, labels = annotate(single, "box", np.random.default_rng(0), train=False)
    assert coords.tolist() == [[7, 4], [33, 9]] and tuple(labels) == BOX_LABELS
    assert box_of(np.zeros((5, 5), bool)) is None


def test_a_scribble_lies_on_the_mask_and_is_fixed_for_a_seed():
    mask = blob_mask()
    scribble = scribble_of(mask, np.random.default_rng(4), train=False)
    assert len(scribble) > 20 and mask[scribble[:, 1].astype(int), scribble[:, 0].astype(int)].all()
    assert np.array_equal(scribble, scribble_of(mask, np.random.default_rng(4), train=False))
    assert not np.array_equal(scribble, scribble_of(mask, np.random.default_rng(5), train=False))
    assert len(scribble) < mask.sum()  # strokes, not the whole mask
    coords, labels = annotate(mask, "scribble", np.random.default_rng(4), train=False)
    assert np.array_equal(coords, scribble) and (labels == 1).all()
    sizes = {len(scribble_of(mask, np.random.default_rng(s), train=True)) for s in range(20)}
    assert len(sizes) > 5


def test_mask_kind_and_empty_masks_give_no_prompt_and_mixed_draws_every_kind():
    mask = blob_mask()
    for kind in ("mask", "points", "box", "scribble"):
        coords, labels = annotate(np.zeros_like(mask), kind, np.random.default_rng(0), train=False)
        assert coords.shape == (0, 2) and labels.shape == (0,)
    assert annotate(mask, "mask", np.random.default_rng(0), train=False)[0].shape == (0, 2)
    kinds = [support_kind("mixed", annotation_rng(42, i, EVAL_EPOCH, 0)) for i in range(40)]
    assert set(kinds) == {"mask", "points", "box", "scribble"}
    assert kinds == [support_kind("mixed", annotation_rng(42, i, EVAL_EPOCH, 0)) for i in range(40)]
    assert support_kind("box", annotation_rng(42, 0, EVAL_EPOCH, 0)) == "box"


def datamodule(**kwargs) -> SyntheticDataModule:
    dm = SyntheticDataModule(**{**SMALL, "test_episodes": 12, **kwargs})
    dm.image_size = 64
    return dm


def test_an_episode_shows_the_same_annotations_whatever_the_workers_and_batch():
    dm = datamodule(support_annotation="mixed")
    dataset = dm.dataset("test")
    item = dataset[(3, EVAL_EPOCH)]
    assert item["support_points"].shape[0] == 2 and len(item["support_kinds"]) == 2
    for k, kind in enumerate(item["support_kinds"]):
        real = item["support_labels"][k] != PAD_LABEL
        mask = item["support_masks"][k].bool()
        if kind in ("points", "scribble"):
            xy = item["support_points"][k][real].long()
            assert real.any() and mask[xy[:, 1], xy[:, 0]].all()
        elif kind == "box":
            assert item["support_labels"][k][real].tolist() == list(BOX_LABELS)
        else:
            assert not real.any()
    loaded = [
        b for w in (0, 2) for b in datamodule(support_annotation="mixed", num_workers=w, batch_size=3).test_dataloader()
    ]
    by_index: dict[int, list] = {}
    for batch in loaded:
        for i, index in enumerate(batch["index"].tolist()):
            if batch["gap"][i]:
                continue  # the support-gap items show another episode's supports
            real = batch["support_labels"][i] != PAD_LABEL
            by_index.setdefault(index, []).append(
                [batch["support_points"][i][k][real[k]].tolist() for k in range(2)] + [batch["support_kinds"][i]]
            )
    assert all(len(v) == 2 and v[0] == v[1] for v in by_index.values())  # 0 and 2 workers alike
    alone = collate_episodes([dataset[(3, EVAL_EPOCH)]])
    real = alone["support_labels"][0] != PAD_LABEL
    assert by_index[3][0][:2] == [alone["support_points"][0][k][real[k]].tolist() for k in range(2)]
    assert "support_points" not in datamodule().dataset("test")[(3, EVAL_EPOCH)]  # mask: the batch as before


def test_a_prompted_support_is_decoded_alone_and_its_mask_replaces_the_true_one(tiny_sam2):
    model = FewShotSAM2(tiny_sam2).eval()
    size = model.image_size
    torch.manual_seed(0)
    images = torch.randn(3, 3, size, size)
    masks = torch.zeros(3, size, size)
    masks[:, 20:60, 30:90] = 1
    coords = torch.tensor([[[40.0, 30.0], [0, 0]], [[30.0, 20.0], [90.0, 60.0]], [[0, 0], [0, 0]]])
    labels = torch.tensor([[1, PAD_LABEL], [2, 3], [PAD_LABEL, PAD_LABEL]])
    out = model.support_masks_from_prompts(images, masks, coords, labels)
    assert torch.equal(out[2], masks[2])  # no prompt: the mask itself
    one = model.support_masks_from_prompts(images[1:2], masks[1:2], coords[1:2, :2], labels[1:2])
    assert torch.equal(out[1], one[0])  # padding and batch mates change nothing
    feats = model.encode_images(images[:1])
    logits, token = model.prompted_decode(feats, coords[:1, :1], labels[:1, :1])
    assert logits.shape == (1, 1, size // 4, size // 4) and token.shape == (1, model.sam2.hidden_dim)
    up = torch.nn.functional.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    assert torch.equal(out[0], (up[0, 0] > 0).float())
    assert SAM2Method.PROMPT_MULTIMASK_POINTS == 1  # one click: multimask, as SAM2's video predictor


@pytest.mark.parametrize("annotation", ["points", "box", "scribble", "mixed"])
def test_every_annotation_tests_through_the_cli_and_reports_its_decoded_support_masks(tmp_path, annotation):
    run = tmp_path / "run"
    run_cli([
        "test", "--config", str(TINY), "--trainer.default_root_dir", str(run),
        "--data.init_args.support_annotation", annotation, "--data.init_args.test_episodes", "12",
    ])  # fmt: skip
    result = json.loads((run / "test_metrics.json").read_text())
    assert result["support_annotation"] == annotation
    assert 0 <= result["support_mask_iou"] <= 100 and result["miou"] is not None
    assert result["support_gap"] is not None  # the swap control runs with the same annotation


def test_the_feature_cache_keys_a_weak_supports_memory_by_its_prompt_and_changes_no_number(tmp_path):
    results = []
    for cache in ("null", "{max_megabytes: 64}"):
        run = tmp_path / cache.replace(" ", "").replace("{", "").replace("}", "").replace(":", "")
        run_cli([
            "test", "--config", str(TINY), "--trainer.default_root_dir", str(run), "--model.feature_cache", cache,
            "--data.init_args.support_annotation", "points", "--data.init_args.test_episodes", "16",
            "--data.init_args.shot", "2", "--data.init_args.gap_episodes", "0",
        ])  # fmt: skip
        results.append(json.loads((run / "test_metrics.json").read_text()))
    for key in ("miou", "fbiou", "support_mask_iou"):
        assert results[0][key] == pytest.approx(results[1][key], abs=1e-4)
    assert results[1]["encoder_passes"] is not None


def test_a_mask_run_reports_no_support_mask_iou_and_a_bad_annotation_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run_cli(
        ["test", "--config", str(TINY), "--trainer.default_root_dir", str(run), "--data.init_args.test_episodes", "8"]
    )
    result = json.loads((run / "test_metrics.json").read_text())
    assert result["support_annotation"] == "mask" and result["support_mask_iou"] is None
    one_line_error(
        capsys, ["test", "--config", str(TINY), "--data.init_args.support_annotation", "lasso"], "support_annotation"
    )
    with pytest.raises(InputError, match="support_annotation"):
        SyntheticDataModule(support_annotation="lasso")  # type: ignore[arg-type]


def test_training_with_mixed_annotations_fits_through_the_cli(tmp_path):
    run = tmp_path / "run"
    run_cli([
        "fit", "--config", str(TINY), "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2", "--data.init_args.support_annotation", "mixed",
    ])  # fmt: skip
    best = run / "checkpoints" / "best.ckpt"
    assert best.is_file()
    saved = torch.load(best, map_location="cpu", weights_only=False)
    assert saved["datamodule_hyper_parameters"]["support_annotation"] == "mixed"


def test_sansa_decodes_weak_supports_at_its_input_size_through_the_cli(tmp_path):
    run = tmp_path / "run"
    run_cli([
        "test", "--config", str(TINY), "--trainer.default_root_dir", str(run), "--model.method", "fssam2.methods.SANSA",
        "--model.method_args", "{input_size: 48}", "--data.init_args.support_annotation", "box",
        "--data.init_args.test_episodes", "8",
    ])  # fmt: skip
    result = json.loads((run / "test_metrics.json").read_text())
    assert result["method"] == "SANSA" and 0 <= result["support_mask_iou"] <= 100


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fssam2.methods.FewShotSAM2", "fssam2.methods.SANSA"])
def test_predict_writes_the_masks_of_weakly_annotated_supports(tmp_path, method):
    run = tmp_path / "run"
    run_cli([
        "predict", "--config", str(TINY), "--trainer.default_root_dir", str(run), "--model.method", method,
        "--data.init_args.support_annotation", "points", "--data.init_args.test_episodes", "6",
    ])  # fmt: skip
    written = sorted((run / "predictions").iterdir())
    assert [p.name[:5] for p in written] == [f"{i:05d}" for i in range(6)]
    for path in written:
        mask = np.asarray(Image.open(path))
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}


def test_a_weak_supports_memory_key_names_its_prompt():
    dm = datamodule(support_annotation="points", gap_episodes=0)
    batch = next(iter(dm.test_dataloader()))
    model = SimpleNamespace(image_size=64)
    keys = SAM2Method.cache_keys(model, batch, "test")  # type: ignore[arg-type]
    mask_batch = {k: v for k, v in batch.items() if k not in ("support_points", "support_labels", "support_kinds")}
    plain = SAM2Method.cache_keys(model, mask_batch, "test")  # type: ignore[arg-type]
    for key, memory in zip(keys.memories, plain.memories, strict=True):
        assert key[0] == memory and isinstance(key[1], str)  # (image and class, the prompt's digest)
    assert len(set(keys.memories)) == len(keys.memories)  # each support's own points


def test_prompts_are_drawn_on_the_support_overlays_of_w_and_b(tmp_path):
    image = np.zeros((40, 50, 3), np.uint8)
    marked = mark_prompt(image, np.array([[10.0, 5.0], [30.0, 20.0], [3.0, 30.0], [0, 0]]), np.array([2, 3, 1, -1]))
    assert (marked[5, 10:31] == (255, 230, 0)).all() and (marked[30, 3] == (40, 230, 40)).all()
    assert (marked[0, 0] == 0).all()  # padding is not drawn
    run = tmp_path / "run"
    run_cli([
        "test", "--config", str(TINY), "--trainer.default_root_dir", str(run), "--data.init_args.test_episodes", "8",
        "--data.init_args.support_annotation", "box", "--trainer.logger", "lightning.pytorch.loggers.WandbLogger",
        "--trainer.logger.offline", "true",
    ])  # fmt: skip
    wandb.finish()  # flush the offline run to disk
    (wandb_run,) = (run / "wandb").glob("offline-run-*")
    pictures = sorted(wandb_run.glob("files/media/images/test/episodes*.png"))
    assert len(pictures) == 8
    boxes = [(np.asarray(Image.open(p).convert("RGB")) == (255, 230, 0)).all(-1).sum() for p in pictures]
    assert all(n > 0 for n in boxes)  # every support shows its box


def test_blank_supports_show_no_prompt_and_report_no_support_mask_iou(tmp_path):
    run = tmp_path / "run"
    run_cli([
        "test", "--config", str(TINY), "--trainer.default_root_dir", str(run), "--data.init_args.test_episodes", "8",
        "--data.init_args.support_annotation", "points", "--data.init_args.support_control", "blank",
    ])  # fmt: skip
    result = json.loads((run / "test_metrics.json").read_text())
    assert result["support_control"] == "blank" and result["support_mask_iou"] is None and result["miou"] is not None
