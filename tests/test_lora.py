"""LoRA placement, counts, frozen base, copied weights, adapter state, no double merge."""

import re

import pytest
import torch

from fssam2 import FewShotSAM2, InputError, LoRAConfig, build_sam2, load_lora_state_dict, lora_state_dict
from fssam2.lora import mark_only_lora_trainable
from helpers import make_episode


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
def test_published_placement_on_sam2_1_b_plus():
    model = FewShotSAM2(build_sam2("sam2.1_hiera_b+"), LoRAConfig())
    mark_only_lora_trainable(model)
    layers = model.lora_layers
    assert len(layers) == 85
    assert sum(".attn.qkv" in p for p in layers) == 24
    assert sum(".attn.proj" in p for p in layers) == 24
    assert sum(bool(re.fullmatch(r"image_encoder\.trunk\.blocks\.\d+\.proj", p)) for p in layers) == 3
    assert "image_encoder.trunk.patch_embed.proj" in layers
    assert sum(p.startswith("memory_attention.") for p in layers) == 32
    assert "memory_encoder.out_proj" in layers
    assert not any(p.startswith(("sam_mask_decoder", "sam_prompt_encoder", "obj_ptr")) for p in layers)
    # 750,732 in the published (peft) build; loralib factorises the 7x7 patch-embed conv as
    # (r*7, 3*7) @ (112*7, r*7) instead of peft's conv pair: +21,504 parameters.
    assert trainable(model) == 772_236
    assert sum(p.numel() for p in model.parameters()) - trainable(model) == 80_850_178


def test_only_lora_trains_and_base_weights_are_copied(tiny_sam2, tiny_sam2_state):
    model = FewShotSAM2(tiny_sam2, LoRAConfig())
    mark_only_lora_trainable(model)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.endswith(("lora_A", "lora_B")) for n in names)
    state = model.sam2.state_dict()
    for path in model.lora_layers:
        leaf = model.sam2.get_submodule(path)
        weight = leaf.conv.weight if hasattr(leaf, "conv") else leaf.weight
        torch.testing.assert_close(weight, tiny_sam2_state[f"{path}.weight"], rtol=0, atol=0)
    assert any(k.endswith("conv.weight") for k in state)  # the conv targets really were replaced


def test_fresh_adapters_leave_the_output_unchanged(tiny_sam2_state):
    """lora_B starts at zero: the adapted model computes exactly what the base model does."""
    base = build_sam2("fssam2_tiny")
    base.load_state_dict(tiny_sam2_state)
    plain = FewShotSAM2(base).eval()
    episode = make_episode(1, 2)
    with torch.no_grad():
        expected = plain(*episode)
        adapted = FewShotSAM2(base, LoRAConfig()).eval()
        torch.testing.assert_close(adapted(*episode), expected)


def trained_like(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_adapter_state_round_trip(tiny_sam2_state):
    episode = make_episode(1, 1)
    models = []
    for _ in range(2):
        sam2 = build_sam2("fssam2_tiny")
        sam2.load_state_dict(tiny_sam2_state)
        models.append(FewShotSAM2(sam2, LoRAConfig()).eval())
    trained_like(models[0])
    adapter = lora_state_dict(models[0])
    assert set(adapter) == {n for n, _ in models[0].named_parameters() if n.endswith(("lora_A", "lora_B"))}
    with torch.no_grad():
        assert (models[0](*episode) - models[1](*episode)).abs().max() > 1e-4
        load_lora_state_dict(models[1], adapter)
        torch.testing.assert_close(models[1](*episode), models[0](*episode))


def test_adapter_for_another_lora_config_is_refused(tiny_sam2):
    model = FewShotSAM2(tiny_sam2, LoRAConfig(memory_attention_rank=8))
    other = FewShotSAM2(build_sam2("fssam2_tiny"), LoRAConfig())
    with pytest.raises(InputError, match="does not fit"):
        load_lora_state_dict(model, lora_state_dict(other))


def test_eval_mode_never_merges_so_full_state_reloads_exactly(tiny_sam2_state):
    """eval() must not fold the delta into the base weight: a full-state checkpoint taken in
    eval mode (as Lightning saves after validation) reloads to the same function, not a doubled delta."""
    sam2 = build_sam2("fssam2_tiny")
    sam2.load_state_dict(tiny_sam2_state)
    model = FewShotSAM2(sam2, LoRAConfig())
    trained_like(model)
    model.train()
    base_before = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith(("lora_A", "lora_B"))}
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for k, v in base_before.items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=0)
    episode = make_episode(1, 1)
    with torch.no_grad():
        expected = model(*episode)
        fresh_sam2 = build_sam2("fssam2_tiny")
        fresh = FewShotSAM2(fresh_sam2, LoRAConfig())
        fresh.load_state_dict(state)
        fresh.eval()
        torch.testing.assert_close(fresh(*episode), expected)
        model.train()
        model.eval()  # a second eval/train cycle changes nothing either
        torch.testing.assert_close(model(*episode), expected)


def test_negative_rank_is_refused(tiny_sam2):
    with pytest.raises(InputError, match="rank -1"):
        FewShotSAM2(tiny_sam2, LoRAConfig(memory_encoder_rank=-1))


def test_rank_zero_leaves_a_component_out(tiny_sam2):
    model = FewShotSAM2(tiny_sam2, LoRAConfig(image_encoder_rank=0))
    assert model.lora_layers and not any(p.startswith("image_encoder") for p in model.lora_layers)


def test_a_model_with_lora_trains_only_lora_through_the_public_api(tiny_sam2):
    """Without the Lightning module, FewShotSAM2 with LoRA freezes SAM2 as the published build
    does; without LoRA it leaves SAM2 as it was."""
    model = FewShotSAM2(tiny_sam2, LoRAConfig())
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.endswith(("lora_A", "lora_B")) for n in names)
    plain = FewShotSAM2(build_sam2("fssam2_tiny"))
    assert all(p.requires_grad for p in plain.parameters())
