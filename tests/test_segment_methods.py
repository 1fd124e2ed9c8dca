"""A training-free method on your own images: `fssam2 segment --method ... --method-args ...` and
`Segmenter.from_pretrained(method=..., method_args=...)`, GF-SAM on the tiny SAM2 (SAM2's own
features stand in for DINOv2: nothing is downloaded)."""

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fssam2.benchmarks import read_image, write_png
from fssam2.cli import run_cli
from fssam2.data import to_input
from fssam2.methods import GFSAM
from fssam2.segment import Segmenter
from fssam2.synthetic import SyntheticBenchmark
from helpers import one_line_error

TRACKER = "fssam2_tiny_pointers"
SIZE = 128
GF = ["--method", "fssam2.methods.GFSAM", "--method-args", '{"encoder": "sam2"}']
TINY_BASE = ["--sam2", "fssam2_tiny", "--sam2-checkpoint", TRACKER, "--image-size", str(SIZE)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two supports (image + mask of class 3) and three queries of various sizes, as files."""
    folder = tmp_path_factory.mktemp("images")
    bench = SyntheticBenchmark(image_size=80)
    (folder / "support").mkdir()
    (folder / "query").mkdir()
    for i in range(2):
        image, label = bench.render("test", i, top_class=3)
        write_png(image, folder / "support" / f"s{i}.png")
        write_png(np.where(label == 3, 255, 0).astype(np.uint8), folder / "support" / f"s{i}_mask.png")
    for i in range(3):
        image, _ = bench.render("test", 10 + i, top_class=3)
        write_png(np.ascontiguousarray(image[: 70 - 5 * i]), folder / "query" / f"q{i}.png")
    return folder


def supports(images, n=2):
    return [str(a) for i in range(n) for a in ("--support", images / "support" / f"s{i}.png", images / "support" / f"s{i}_mask.png")]  # fmt: skip


def written(out, name):
    mask = read_image(out / f"{name}.png")[..., 0]
    assert set(np.unique(mask)) <= {0, 255}
    return mask == 255


def test_cli_gfsam_masks_are_its_own_forward_and_not_plain_sam2s(images, tmp_path, capsys):
    out = tmp_path / "out"
    run_cli(["segment", *supports(images), "--query", str(images / "query"), "--output", str(out), *TINY_BASE, *GF])
    assert f"wrote 3 masks and overlays to {out}" in capsys.readouterr().out
    model = GFSAM.build("fssam2_tiny", TRACKER, SIZE, encoder="sam2")
    shots = [read_image(images / "support" / f"s{i}.png") for i in range(2)]
    masks = [read_image(images / "support" / f"s{i}_mask.png")[..., 0] > 0 for i in range(2)]
    support_images = torch.stack([to_input(s, SIZE) for s in shots])[None]
    support_masks = torch.stack(
        [torch.from_numpy(cv2.resize(m.astype(np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)) for m in masks]
    )[None].float()
    plain = Segmenter.from_pretrained("fssam2_tiny", sam2_checkpoint=TRACKER, image_size=SIZE)
    plain.set_support(shots, masks)
    differs = 0
    for i in range(3):
        query = read_image(images / "query" / f"q{i}.png")
        with torch.inference_mode():
            logits = model(support_images, support_masks, to_input(query, SIZE)[None])
        size = query.shape[:2]
        ours = (F.interpolate(logits, size=size, mode="bilinear", align_corners=True)[0, 0] > 0).numpy()
        mask = written(out, f"q{i}")
        assert mask.shape == size and np.array_equal(mask, ours)
        differs += not np.array_equal(mask, plain.predict(query))
    assert differs and any(written(out, f"q{i}").any() for i in range(3))


def test_cli_gfsam_takes_a_prompt_file_support(images, tmp_path, capsys):
    image = read_image(images / "support" / "s0.png")
    mask = read_image(images / "support" / "s0_mask.png")[..., 0] > 0
    ys, xs = np.nonzero(mask)
    prompt = {"box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]}
    (tmp_path / "s0.json").write_text(json.dumps(prompt))
    out = tmp_path / "out"
    run_cli(["segment", "--support", str(images / "support" / "s0.png"), str(tmp_path / "s0.json"),
             "--query", str(images / "query"), "--output", str(out), *TINY_BASE, *GF])  # fmt: skip
    capsys.readouterr()
    assert (out / "s0_support_overlay.png").is_file()
    seg = Segmenter.from_pretrained("fssam2_tiny", sam2_checkpoint=TRACKER, image_size=SIZE,
                                    method="fssam2.methods.GFSAM", method_args={"encoder": "sam2"})  # fmt: skip
    assert isinstance(seg.model, GFSAM) and seg.model.encoder is None
    seg.set_support([image], [prompt])
    assert seg.support_masks[0].any()  # the box decoded by SAM2's prompt path
    for i in range(3):
        assert np.array_equal(written(out, f"q{i}"), seg.predict(read_image(images / "query" / f"q{i}.png")))


REFUSED = {
    "not JSON": (["--method-args", "{encoder: sam2}"], "--method-args '{encoder: sam2}' is not JSON"),
    "not an object": (["--method-args", "[1, 2]"], "--method-args '[1, 2]' is a list, not a JSON object"),
    "bare name": (["--method", "gfsam"], "--method=gfsam is not a few-shot method class: did you mean fssam2.methods.GFSAM?"),
    "bare upper case": (["--method", "sansa"], "did you mean fssam2.methods.SANSA?"),
    "adapter of a training-free method": ([*GF[:2], "--adapter", "fssam2_tiny_hue"], "GFSAM has no adapters (nothing in it trains): drop --adapter fssam2_tiny_hue"),
    "another method's adapter": (["--method", "fssam2.methods.SANSA", "--adapter", "fssam2_tiny_hue"], "--method fssam2.methods.SANSA but --adapter fssam2_tiny_hue holds FewShotSAM2's adapters"),
    "method args beside an adapter": (["--adapter", "fssam2_tiny_hue", "--method-args", '{"encoder": "sam2"}'], "--method-args with --adapter fssam2_tiny_hue: the adapter records"),
    "a trained method without adapter": (["--method", "fssam2.methods.SANSA"], "SANSA's adapters are trained: pass --adapter FILE"),
    "fs-sam2's options": (["--method", "fssam2.methods.FewShotSAM2", "--method-args", '{"lora": null}'], "FewShotSAM2 takes no --method-args"),
    "method args alone": (["--method-args", '{"encoder": "sam2"}'], "--method-args needs --method"),
    "unknown option": ([*GF[:2], "--method-args", '{"encoderr": "sam2"}'], "GFSAM has no option encoderr: its options are encoder"),
    "an option of the wrong type": ([*GF[:2], "--method-args", '{"encoder": "sam2", "disk_radius": "x"}'], "GFSAM option disk_radius='x' (give a number of pixels or null)"),
    "a build argument": ([*GF[:2], "--method-args", '{"image_size": 64}'], "--method-args image_size: give it as --image-size"),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSED)
def test_method_options_that_do_not_go_together_are_one_line_naming_them(images, tmp_path, capsys, case):
    args, message = REFUSED[case]
    out = tmp_path / "out"
    err = one_line_error(capsys, ["segment", *supports(images, 1), "--query", str(images / "query"),
                                  "--output", str(out), "--sam2", "fssam2_tiny", *args], message)  # fmt: skip
    assert "--method" in err or "--adapter" in err
    assert not out.exists() or not any(out.iterdir())
