"""build_sam2: configs by name or path, checkpoints in Meta's format, and every bad input."""

import pytest
import torch

from fssam2 import InputError, build_sam2
from fssam2.build import load_model_config, resolve_config


def test_packaged_names_and_postprocessing():
    cfg = load_model_config("sam2.1_hiera_b+")
    extra = cfg.model.sam_mask_decoder_extra_args
    assert extra.dynamic_multimask_via_stability is True
    assert extra.dynamic_multimask_stability_delta == 0.05
    assert extra.dynamic_multimask_stability_thresh == 0.98
    model = build_sam2("fssam2_tiny")
    assert model.sam_mask_decoder.dynamic_multimask_via_stability
    assert not model.training
    assert next(model.parameters()).device.type == "cpu"


def test_yaml_path_and_image_size(tmp_path):
    cfg = load_model_config("fssam2_tiny")
    path = tmp_path / "mine.yaml"
    path.write_text(resolve_config("fssam2_tiny").read_text())
    model = build_sam2(path, image_size=256)
    assert model.image_size == 256
    assert model.sam_prompt_encoder.image_embedding_size == (16, 16)
    assert cfg.model.image_size == 128


def test_meta_format_checkpoint_round_trip(tmp_path, tiny_sam2):
    path = tmp_path / "tiny.pt"
    torch.save({"model": tiny_sam2.state_dict()}, path)
    loaded = build_sam2("fssam2_tiny", path)
    for k, v in tiny_sam2.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(InputError, match=r"nope\.pt does not exist.*download"):
        build_sam2("fssam2_tiny", tmp_path / "nope.pt")


def test_corrupt_checkpoint(tmp_path, tiny_sam2):
    path = tmp_path / "cut.pt"
    torch.save({"model": tiny_sam2.state_dict()}, path)
    path.write_bytes(path.read_bytes()[:5000])  # truncated download
    with pytest.raises(InputError, match=r"cut\.pt could not be read.*corrupt or truncated"):
        build_sam2("fssam2_tiny", path)
    junk = tmp_path / "junk.pt"
    torch.save({"model": [1, 2, 3]}, junk)
    with pytest.raises(InputError, match=r"junk\.pt holds no state dict"):
        build_sam2("fssam2_tiny", junk)


def test_checkpoint_for_another_config(tmp_path, tiny_sam2):
    state = tiny_sam2.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["no_mem_embed"]
    state["sam_mask_decoder.iou_token.weight"] = torch.zeros(1, 3)
    path = tmp_path / "other.pt"
    torch.save({"model": state}, path)
    with pytest.raises(InputError) as err:
        build_sam2("fssam2_tiny", path)
    message = str(err.value)
    for part in (
        "other.pt",
        "fssam2_tiny",
        "missing keys: no_mem_embed",
        "unexpected keys: extra.weight",
        "sam_mask_decoder.iou_token.weight (1, 3) vs (1, 64)",
    ):
        assert part in message


@pytest.mark.parametrize("size", [100, 0, -32])
def test_image_size_not_a_multiple_of_32(size):
    with pytest.raises(InputError, match=f"image_size={size} is not a positive multiple of 32"):
        build_sam2("fssam2_tiny", image_size=size)


def test_unknown_config(tmp_path):
    with pytest.raises(InputError, match=r"'sam2.1_hiera_xl' is neither a packaged config \(sam2.1_hiera_t"):
        build_sam2("sam2.1_hiera_xl")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trunk: {}\n")
    with pytest.raises(InputError, match="no top-level 'model' section"):
        build_sam2(bad)
