"""Supports shown by points or a box on your own images: `Segmenter.set_support` with a prompt,
and `fssam2 segment --support IMAGE PROMPT.json`."""

import json

import numpy as np
import pytest
import torch

from fssam2 import InputError, build_sam2
from fssam2.annotations import pad_prompts
from fssam2.benchmarks import read_image, write_png
from fssam2.cli import run_cli
from fssam2.methods import SANSA, FewShotSAM2
from fssam2.segment import Segmenter, support_prompt
from fssam2.synthetic import SyntheticBenchmark
from helpers import one_line_error

TRACKER = "fssam2_tiny_pointers"  # the demos' tiny SAM2, pretrained on prompts


@pytest.fixture(scope="module")
def scene():
    """A synthetic image (200 x 160: not square), its largest object's mask and that object's box."""
    bench = SyntheticBenchmark(image_size=160, pool_sizes=(20, 4, 4), seed=0)
    image, label = bench.read(bench.lists("train", 0)[0][0])
    image = np.ascontiguousarray(np.concatenate([image, image[:, :40]], axis=1))
    label = np.concatenate([label, np.zeros_like(label[:, :40])], axis=1)
    values = [v for v in np.unique(label) if 0 < v < 255]
    mask = label == max(values, key=lambda v: (label == v).sum())
    ys, xs = np.nonzero(mask)
    return image, mask, [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def segmenter() -> Segmenter:
    return Segmenter(FewShotSAM2(build_sam2("fssam2_tiny", TRACKER)))


def test_a_box_support_is_decoded_at_input_size_and_its_memory_is_the_decoded_masks(scene):
    image, mask, box = scene
    seg = segmenter()
    seg.set_support([image], [{"box": box}])
    (decoded,) = seg.support_masks
    assert decoded.shape == mask.shape and decoded.dtype == bool
    assert (decoded & mask).sum() / (decoded | mask).sum() > 0.5  # the pretrained prompt path finds the object
    model, size = seg.model, seg.model.image_size
    scale = np.array([size / image.shape[1], size / image.shape[0]], np.float32)  # x by width, y by height
    coords, labels = pad_prompts([np.asarray(box, np.float32).reshape(2, 2) * scale], [np.array([2, 3])])
    query = seg._input(image)
    with torch.inference_mode():
        expected = model.support_masks_from_prompts(query, torch.zeros(1, size, size), coords, labels)
        memory = model.encode_support(query[None], expected[None])
    for ours, theirs in zip(seg._memory, memory, strict=True):
        assert torch.equal(ours, theirs)
    points = segmenter()
    ys, xs = np.nonzero(mask)
    points.set_support([image], [{"points": [[int(xs[0]), int(ys[0]), 1], [0, 0, 0]]}])
    assert points.support_masks[0].any() and not np.array_equal(points.support_masks[0], decoded)
    mixed = segmenter()
    mixed.set_support([image, image], [mask, {"box": box}])  # a mask and a prompt side by side
    assert np.array_equal(mixed.support_masks[0], mask) and np.array_equal(mixed.support_masks[1], decoded)


def test_a_sansa_segmenter_gives_its_memory_the_prompted_decode_as_its_code_does(scene):
    image, mask, box = scene
    seg = Segmenter(SANSA(build_sam2("fssam2_tiny", TRACKER)))
    seg.set_support([image], [{"box": box}])
    model, size = seg.model, seg.model.image_size
    scale = np.array([size / image.shape[1], size / image.shape[0]], np.float32)
    coords, labels = pad_prompts([np.asarray(box, np.float32).reshape(2, 2) * scale], [np.array([2, 3])])
    query = seg._input(image)
    with torch.inference_mode():
        decoded = model.support_masks_from_prompts(query, torch.zeros(1, size, size), coords, labels)
        prompted = model.encode_support(query[None], decoded[None], (coords[None], labels[None]))
        as_mask = model.encode_support(query[None], decoded[None])
    (ours,), (theirs,), (mask_path,) = seg._memory, prompted, as_mask
    assert all(torch.equal(ours[k], theirs[k]) for k in ("memory", "pointer"))
    assert not torch.allclose(ours["pointer"], mask_path["pointer"])  # not the decoded mask as a mask


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ({"points": [[250, 10, 1]]}, "point (250, 10) lies outside the 200x160 image"),
        ({"points": [[10, -1]]}, "point (10, -1) lies outside"),
        ({"box": [50, 40, 50, 90]}, "box [50, 40, 50, 90] is empty"),
        ({"box": [0, 0, 201, 20]}, "reaches outside the 200x160 image"),
        ({"box": [1, 2, 3]}, "is not [x0, y0, x1, y1]"),
        ({"points": [[10, 10, 0]]}, "no object point and no box"),
        ({"points": [[10, 10, 2]]}, "not [x, y] or [x, y, label] with label 1 or 0"),
        ({"lasso": [[1, 2]]}, "give a mask, or a prompt"),
        ({}, "give a mask, or a prompt"),
    ],
)
def test_a_bad_prompt_is_one_line_naming_the_support(prompt, message):
    with pytest.raises(InputError, match="^Prompt of dog") as err:
        support_prompt(prompt, 200, 160, "Prompt of dog")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_points_and_boxes_may_be_numpy_or_torch_and_other_values_are_one_line(scene):
    image, mask, box = scene
    ys, xs = np.nonzero(mask)
    plain = {"points": [[int(xs[0]), int(ys[0]), 1], [0, 0, 0]], "box": box}
    expected = segmenter()
    expected.set_support([image], [plain])
    given = [
        {"points": np.array(plain["points"]), "box": np.array(box)},
        {"points": torch.tensor(plain["points"], dtype=torch.float32), "box": torch.tensor(box)},
        {"points": [[xs[0], ys[0], 1], [0, 0, np.int64(0)]], "box": [np.int32(v) for v in box]},  # numpy scalars
        {"points": [np.array([xs[0], ys[0], 1]), torch.tensor([0, 0, 0])], "box": tuple(box)},
    ]
    for prompt in given:
        seg = segmenter()
        seg.set_support([image], [prompt])
        assert np.array_equal(seg.support_masks[0], expected.support_masks[0])
    for prompt, message in [
        ({"points": np.array([[xs[0], ys[0], 1]]) > 0}, "point [True, True, True] is not [x, y] or [x, y, label]"),
        ({"points": np.array([3, 4, 1])}, "one row a point"),
        ({"points": "3, 4"}, "points '3, 4' are not a list"),
        ({"points": [[float("nan"), 4, 1]]}, "of finite numbers"),
        ({"box": np.array([[1, 2], [30, 40]])}, "box [[1, 2], [30, 40]] is not [x0, y0, x1, y1]"),
    ]:
        with pytest.raises(InputError, match="^Prompt of support 0") as err:
            segmenter().set_support([image], [prompt])
        assert message in str(err.value) and "\n" not in str(err.value), err.value


def test_box_corners_come_first_labelled_2_and_3_and_a_bare_point_is_foreground():
    coords, labels = support_prompt({"points": [[5, 6]], "box": [1, 2, 30, 40]}, 200, 160)
    assert coords.tolist() == [[1, 2], [30, 40], [5, 6]] and labels.tolist() == [2, 3, 1]


def test_cli_segments_with_a_prompt_file_and_draws_the_decoded_support(scene, tmp_path, capsys):
    image, mask, box = scene
    (tmp_path / "support").mkdir()
    (tmp_path / "query").mkdir()
    write_png(image, tmp_path / "support" / "dog.png")
    write_png(image, tmp_path / "query" / "q.png")
    prompt = tmp_path / "support" / "dog.json"
    prompt.write_text(json.dumps({"box": box}))
    out = tmp_path / "out"
    args = ["segment", "--sam2", "fssam2_tiny", "--sam2-checkpoint", TRACKER,
            "--support", str(tmp_path / "support" / "dog.png"), str(prompt), "--query", str(tmp_path / "query"),
            "--output", str(out)]  # fmt: skip
    run_cli(args)
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["dog_support_overlay.png", "q.png", "q_overlay.png"]
    drawn = read_image(out / "dog_support_overlay.png")
    assert (drawn == (255, 230, 0)).all(-1).any()  # the box is drawn
    seg = segmenter()
    seg.set_support([image], [{"box": box}])
    written = read_image(out / "q.png")[..., 0] > 0
    assert np.array_equal(written, seg.predict(image))  # the API's mask
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    one_line_error(capsys, args, "exist already")  # the same run again writes nothing over
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    bad = tmp_path / "support" / "bad.json"
    bad.write_text("{points: oops")
    one_line_error(
        capsys,
        [*args[:6], str(tmp_path / "support" / "dog.png"), str(bad), *args[8:-1], str(tmp_path / "o2")],
        "is not JSON",
    )
    bad.write_text("[1, 2]")
    one_line_error(
        capsys,
        [*args[:6], str(tmp_path / "support" / "dog.png"), str(bad), *args[8:-1], str(tmp_path / "o3")],
        "holds a list",
    )
    bad.write_text(json.dumps({"points": [[900, 2, 1]]}))
    one_line_error(
        capsys,
        [*args[:6], str(tmp_path / "support" / "dog.png"), str(bad), *args[8:-1], str(tmp_path / "o4")],
        "lies outside",
    )
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())


def test_a_support_folder_takes_prompt_files_and_refuses_one_beside_a_mask(scene, tmp_path, capsys):
    image, mask, box = scene
    support, query = tmp_path / "support", tmp_path / "query"
    support.mkdir()
    query.mkdir()
    write_png(image, query / "q.png")
    write_png(image, support / "cat.bmp")  # the mask support
    write_png(mask.astype(np.uint8) * 255, support / "cat.png")
    write_png(image, support / "dog.bmp")  # the prompted support
    (support / "dog.json").write_text(json.dumps({"box": box}))
    write_png(image, support / "eel.png")  # a png image shown by its prompt file
    (support / "eel.json").write_text(json.dumps({"points": [[int(v) for v in np.argwhere(mask)[0][::-1]] + [1]]}))
    args = ["segment", "--sam2", "fssam2_tiny", "--sam2-checkpoint", TRACKER, "--support", str(support),
            "--query", str(query)]  # fmt: skip
    run_cli([*args, "--output", str(tmp_path / "out")])
    capsys.readouterr()
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["dog_support_overlay.png", "eel_support_overlay.png", "q.png", "q_overlay.png"]
    seg = segmenter()
    prompts = [json.loads((support / f"{name}.json").read_text()) for name in ("dog", "eel")]
    seg.set_support([image] * 3, [mask, *prompts])
    assert np.array_equal(read_image(tmp_path / "out" / "q.png")[..., 0] > 0, seg.predict(image))
    write_png(mask.astype(np.uint8) * 255, support / "dog.png")
    err = one_line_error(capsys, [*args, "--output", str(tmp_path / "o2")], "both the mask dog.png and the prompt file")
    assert "dog.json of dog.bmp" in err and not (tmp_path / "o2").exists()
