"""The Segmenter API takes images and masks as users hold them (numpy or torch; uint8, float in
[0, 1], greyscale, RGBA, 0/255 masks) and gives the mask of the same uint8 RGB image, or refuses
what is ambiguous in one line."""

import numpy as np
import pytest
import torch

from fssam2 import FewShotSAM2, InputError, build_sam2
from fssam2.segment import Segmenter
from fssam2.synthetic import SyntheticBenchmark


@pytest.fixture(scope="module")
def seg():
    """The tiny SAM2 pretrained on tracking (it finds the supports' object in the query)."""
    return Segmenter(FewShotSAM2(build_sam2("fssam2_tiny", "fssam2_tiny_tracking", image_size=64)))


@pytest.fixture(scope="module")
def scene():
    """Two supports (uint8 RGB, bool masks of class 3) and a query, 80x80."""
    bench = SyntheticBenchmark(image_size=80)
    rendered = [bench.render("test", i, top_class=3) for i in range(3)]
    return [im for im, _ in rendered[:2]], [label == 3 for _, label in rendered[:2]], rendered[2][0]


@pytest.fixture
def reference(seg, scene):
    """Logits and mask of the uint8 query with the uint8 supports, which every other form must match."""
    images, masks, query = scene
    seg.set_support(images, masks)
    mask = seg.predict(query)
    assert 0 < mask.mean() < 0.5  # a real object mask: an all-empty one would hide a difference
    return seg.logits(query), mask


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def grey(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=2).round().astype(np.uint8)


def test_float_tensor_and_rgba_queries_give_the_uint8_mask(seg, scene, reference):
    _, _, query = scene
    logits, mask = reference
    alpha = np.linspace(0, 255, query.size // 3).reshape(query.shape[:2]).astype(np.uint8)
    chw = torch.from_numpy(query).permute(2, 0, 1)
    forms = {
        "float32 [0, 1]": query.astype(np.float32) / 255,
        "float64 [0, 1]": query / 255.0,
        "float16 [0, 1]": (query / 255.0).astype(np.float16),
        "int64 0..255": query.astype(np.int64),
        "RGBA": np.dstack([query, alpha]),
        "torch uint8 HWC": torch.from_numpy(query),
        "torch uint8 CHW": chw,
        "torch float64 CHW [0, 1]": chw.double() / 255,
        "torch float32 CHW [0, 1]": chw.float() / 255,
    }
    for name, form in forms.items():
        assert torch.equal(seg.logits(form), logits), name
    for name in ("RGBA", "torch float64 CHW [0, 1]"):  # the mask, at the query's size
        assert np.array_equal(seg.predict(forms[name]), mask), name


def test_greyscale_queries_give_the_mask_of_the_grey_rgb_image(seg, scene, reference):
    query = grey(scene[2])
    expected = seg.logits(np.dstack([query] * 3))
    for name, form in {
        "HxW": query,
        "HxWx1": query[..., None],
        "float HxW": query / 255.0,
        "grey + alpha HxWx2": np.dstack([query, np.zeros_like(query)]),
        "torch 1xHxW": torch.from_numpy(query)[None],
    }.items():
        assert torch.equal(seg.logits(form), expected), name
    assert seg.predict(torch.from_numpy(query)[None]).shape == query.shape


def test_supports_in_every_accepted_form_give_the_same_memory(seg, scene, reference):
    images, masks, query = scene
    logits, _ = reference
    forms = {
        "float [0, 1] images, 0/255 masks": ([im / 255.0 for im in images], [m.astype(np.uint8) * 255 for m in masks]),
        "torch CHW images, 0/1 float masks": (
            [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images],
            [torch.from_numpy(m).float() for m in masks],
        ),
        "a numpy batch, masks HxWx1": (np.stack(images), np.stack(masks)[..., None]),
        "a torch batch [K, 3, H, W]": (
            torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2),
            torch.from_numpy(np.stack(masks)),
        ),
        "RGBA images, RGB 0/255 masks": (
            [np.dstack([im, np.full(im.shape[:2], 255, np.uint8)]) for im in images],
            [np.repeat(m[..., None].astype(np.uint8) * 255, 3, axis=2) for m in masks],
        ),
        "a palette index as the object": (images, [m.astype(np.uint8) * 15 for m in masks]),
    }
    for name, (ims, ms) in forms.items():
        seg.set_support(ims, ms)
        assert torch.equal(seg.logits(query), logits), name


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda q: q.astype(np.float32), r"float32 with values in \[0, 2\d\d\]: pass float in \[0, 1\] or uint8"),
        (lambda q: torch.from_numpy(q).double(), r"float64 with values in \[0, 2\d\d\]: pass float in \[0, 1\]"),
        (lambda q: q / 127.5 - 1, r"values in \[-1, 1\]"),
        (lambda q: np.where(q > 100, np.nan, q / 255.0), "NaN or infinite"),
        (lambda q: q.astype(np.uint16) * 257, "uint16, whose value range is ambiguous"),
        (lambda q: q > 0, "bool, whose value range is ambiguous"),
        (lambda q: q.astype(np.int32) - 10, r"int32 with values in \[-10, "),
        (lambda q: q.transpose(2, 0, 1).copy(), r"shape \(3, 80, 80\): pass one image, channels last"),
        (lambda q: q[None], r"shape \(1, 80, 80, 3\): pass one image"),
        (lambda q: q[:0], "is empty"),
        (lambda q: torch.from_numpy(q[:3, :3]), r"shape \(3, 3, 3\): both its first and last axis could be"),
        (lambda q: "photo.jpg", "is a str, not an image array"),
    ],
)
def test_ambiguous_query_images_are_one_line(seg, scene, make, message):
    with pytest.raises(InputError, match=message) as err:
        seg.predict(make(scene[2]))
    assert one_line(err).startswith("Query image")


def test_support_batches_of_none_or_one_unwrapped_example_are_one_line(seg, scene):
    images, masks, _ = scene
    cases = [
        (([], []), r"at least one pair \(0 images, 0 masks\)"),
        ((np.zeros((0, 80, 80, 3), np.uint8), np.zeros((0, 80, 80), np.uint8)), r"at least one pair \(0 images"),
        ((torch.zeros(0, 3, 80, 80), torch.zeros(0, 80, 80)), r"at least one pair \(0 images"),
        ((images[0], [masks[0]]), r"a list of images .* shape \(80, 80, 3\): wrap a single example in a list"),
        (([images[0]], masks[0]), r"a list of masks .* shape \(80, 80\): wrap a single example in a list"),
        ((images, masks[:1]), r"one mask per support image, at least one pair \(2 images, 1 masks\)"),
    ]
    for (ims, ms), message in cases:
        with pytest.raises(InputError, match=message) as err:
            seg.set_support(ims, ms)
        one_line(err)
    with pytest.raises(InputError, match=r"one name per support image \(2 images, 1 names\)"):
        seg.set_support(images, masks, names=["dog"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda m: m.astype(np.uint8) * 2 + (m[::-1] & ~m), r"holds 3 values \(0, 1, 2\): pass a binary mask"),
        (lambda m: m * np.linspace(0.1, 1, m.size).reshape(m.shape), r"holds \d+ values \(0, 0\.\d+, .*, \.\.\.\)"),
        (lambda m: np.where(m, 255, 128).astype(np.uint8), r"holds 2 values \(128, 255\)"),
        (lambda m: np.where(m, np.nan, 0.0), "holds 2 values"),
        (lambda m: np.stack([m, m]), r"shape \(2, 80, 80\): pass one mask"),
    ],
)
def test_masks_that_are_not_binary_are_one_line(seg, scene, make, message):
    images, masks, _ = scene
    with pytest.raises(InputError, match=message) as err:
        seg.set_support(images, [masks[0], make(masks[1])], names=["a.jpg", "b.jpg"])
    assert one_line(err).startswith("Mask of b.jpg")
