"""The synthetic benchmark's class families, the varied pretraining world and the prompt decode."""

import json

import numpy as np
import pytest
import torch

from fssam2 import build_sam2
from fssam2.cli import run_cli
from fssam2.errors import InputError
from fssam2.looks import PATTERNS, SHAPE_OUTLINES
from fssam2.methods.fssam2 import FewShotSAM2
from fssam2.synthetic import FAMILIES, SyntheticBenchmark, VariedVideo
from helpers import TINY, one_line_error


def instances(bench: SyntheticBenchmark, class_id: int, count: int) -> list:
    return [bench.instance(np.random.default_rng((7, i)), class_id) for i in range(count)]


def test_a_shape_class_keeps_its_outline_and_nothing_else():
    bench = SyntheticBenchmark(family="shape")
    for class_id in (1, 7, 20):
        objects = instances(bench, class_id, 12)
        assert {o.outline for o in objects} == {objects[0].outline}, "the class fixes the outline"
        assert len({o.colors for o in objects}) == 12 and len({o.pattern for o in objects}) > 2
    assert instances(bench, 1, 1)[0].outline != instances(bench, 2, 1)[0].outline


def test_a_texture_class_keeps_its_pattern_and_nothing_else():
    bench = SyntheticBenchmark(family="texture")
    for class_id in (1, 9, 20):
        objects = instances(bench, class_id, 12)
        assert {o.pattern for o in objects} == {list(PATTERNS)[class_id - 1]}
        assert len({o.colors for o in objects}) == 12 and len({o.outline for o in objects}) > 4


def test_every_family_renders_seeded_label_maps_of_its_classes():
    for family in FAMILIES:
        bench = SyntheticBenchmark(family=family, pool_sizes=(40, 8, 8), image_size=96)
        image, label = bench.render("train", 3)
        again = SyntheticBenchmark(family=family, pool_sizes=(40, 8, 8), image_size=96).render("train", 3)
        np.testing.assert_array_equal(image, again[0])
        np.testing.assert_array_equal(label, again[1])
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        values = set(np.unique(label).tolist()) - {0, 255}
        assert values and values <= set(range(1, 21))
        images, by_class = bench.lists("train", 0)
        assert images and not set(by_class) & set(bench.fold_classes(0))
    hue, shape = (SyntheticBenchmark(family=f, image_size=96).render("test", 0)[0] for f in ("hue", "shape"))
    assert not np.array_equal(hue, shape), "the family changes what is drawn"


def test_the_families_have_twenty_classes_each():
    assert len(SHAPE_OUTLINES) >= 20 and len(PATTERNS) == 20
    with pytest.raises(InputError, match="at most 20"):
        SyntheticBenchmark(family="shape", num_classes=40)
    with pytest.raises(InputError, match="family='colour'"):
        SyntheticBenchmark(family="colour")


def test_the_cli_takes_the_family_and_refuses_an_unknown_one(tmp_path, capsys):
    one_line_error(
        capsys,
        ["test", "--config", str(TINY), "--data.init_args.family", "colour",
         "--trainer.default_root_dir", str(tmp_path / "bad")],
        "family='colour' is not a class family",
    )  # fmt: skip
    assert not (tmp_path / "bad").exists()
    run_cli(
        ["test", "--config", str(TINY), "--data.init_args.family", "shape",
         "--trainer.default_root_dir", str(tmp_path / "shape"), "--data.init_args.gap_episodes", "0"]
    )  # fmt: skip
    metrics = json.loads((tmp_path / "shape" / "test_metrics.json").read_text())
    assert metrics["episodes"] == 25


def test_varied_clips_are_seeded_and_colour_alone_does_not_identify_the_object():
    video = VariedVideo(image_size=96, seed=5)
    changed = 0
    for index in range(60):
        first, mask0, later, mask1 = video.pair(index)
        for a, b in zip((first, mask0, later, mask1), video.pair(index), strict=True):
            np.testing.assert_array_equal(a, b)
        assert mask0.sum() > 20, "the memory frame shows the object"
        if mask1.sum() > 20:
            before, after = first[mask0].mean(0), later[mask1].mean(0)
            changed += int(np.abs(before.astype(float) - after).max() > 50)
    assert 12 <= changed <= 45, f"{changed} of 60 clips recolour the tracked object"
    assert not np.array_equal(video.pair(0)[0], VariedVideo(image_size=96, seed=6).pair(0)[0])


def test_varied_clips_without_motion_keep_the_object_in_place():
    video = VariedVideo(image_size=96)
    for index in range(20):
        _, mask0, _, mask1 = video.pair(index, motion=0.0)
        assert not (mask1 & ~mask0).any(), "without motion the object stays (it may only be covered)"


def test_a_prompt_decides_the_decoded_mask_and_trains_the_prompt_encoder():
    torch.manual_seed(0)
    model = FewShotSAM2(build_sam2("fssam2_tiny", image_size=64))
    feats = model.encode_images(torch.randn(2, 3, 64, 64))
    coords = torch.tensor([[[10.0, 12.0], [0.0, 0.0]], [[5.0, 5.0], [40.0, 50.0]]])
    labels = torch.tensor([[1, -1], [2, 3]], dtype=torch.int32)  # a click; a box
    masks, iou = model.decode_prompts(feats, coords, labels)
    assert masks.shape == (2, 4, 16, 16) and iou.shape == (2, 4)
    other, _ = model.decode_prompts(feats, coords.flip(0), labels.flip(0))
    assert not torch.allclose(masks, other.flip(0)), "the prompt, not only the image, decides the mask"
    masks.sum().backward()
    grads = [p.grad for p in model.sam2.sam_prompt_encoder.point_embeddings.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads[1:]), "foreground and box corners train"
    assert model.sam2.no_mem_embed.grad is not None


def test_relocated_clips_lay_the_objects_out_anew_and_leave_the_shipped_world_as_it_was():
    shipped, moved = VariedVideo(image_size=96, seed=3), VariedVideo(image_size=96, seed=3, relocate=1.0)
    far = 0
    for index in range(30):
        before, after = shipped.pair(index), moved.pair(index)
        np.testing.assert_array_equal(before[0], after[0])  # the memory frame is the same
        np.testing.assert_array_equal(before[1], after[1])
        for a, b in zip(before, VariedVideo(image_size=96, seed=3, relocate=0.0).pair(index), strict=True):
            np.testing.assert_array_equal(a, b)  # relocate 0 draws the clips the shipped tracker saw
        if after[3].any():
            shift = np.abs(np.argwhere(after[3]).mean(0) - np.argwhere(after[1]).mean(0)).max()
            far += int(shift > 96 * 0.35)  # beyond the furthest an ordinary clip moves
    assert far >= 6, f"{far} of 30 relocated objects moved further than motion alone takes them"
