"""FewShotSAM2.forward against an independent, published-style step-by-step computation."""

import pytest
import torch
import torch.nn.functional as F

from fssam2 import FewShotSAM2, InputError
from helpers import make_episode


def reference_forward(sam2, support_images, support_masks, query_images):
    """One image at a time through SAM2's own methods, supports accumulated as memories,
    as the published FS-SAM2 code does (no batching of supports and query)."""
    size = sam2.image_size
    outputs = []
    for b in range(query_images.shape[0]):
        memories, memory_pos = [], None
        for k in range(support_images.shape[1]):
            out = sam2.forward_image(support_images[b, k][None])
            pix_feat = out["backbone_fpn"][-1]
            logits = support_masks[b, k][None, None].float() * 20.0 - 10.0
            mem = sam2.memory_encoder(pix_feat, logits, skip_mask_sigmoid=True)
            memories.append(mem["vision_features"].flatten(2).permute(2, 0, 1))
            memory_pos = memory_pos if memory_pos is not None else mem["vision_pos_enc"][0].flatten(2).permute(2, 0, 1)
        out = sam2.forward_image(query_images[b][None])
        feats = out["backbone_fpn"][-sam2.num_feature_levels :]
        pos = out["vision_pos_enc"][-sam2.num_feature_levels :]
        conditioned = (
            sam2.memory_attention(
                curr=feats[-1].flatten(2).permute(2, 0, 1),
                curr_pos=pos[-1].flatten(2).permute(2, 0, 1),
                memory=torch.cat(memories, 0),
                memory_pos=torch.cat([memory_pos] * len(memories), 0),
                num_obj_ptr_tokens=0,
            )
            .permute(1, 2, 0)
            .reshape(feats[-1].shape)
        )
        sparse, dense = sam2.sam_prompt_encoder(
            points=(torch.zeros(1, 1, 2), -torch.ones(1, 1, dtype=torch.int32)), boxes=None, masks=None
        )
        low_res, _, _, _ = sam2.sam_mask_decoder(
            image_embeddings=conditioned,
            image_pe=sam2.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
            repeat_image=False,
            high_res_features=feats[:-1],
        )
        outputs.append(F.interpolate(low_res.float(), size=(size, size), mode="bilinear", align_corners=False))
    return torch.cat(outputs)


@pytest.mark.parametrize("shot", [1, 3])
def test_forward_matches_stepwise_reference(tiny_sam2, shot):
    episode = make_episode(batch=2, shot=shot)
    model = FewShotSAM2(tiny_sam2).eval()
    with torch.no_grad():
        ours = model(*episode)
        ref = reference_forward(tiny_sam2, *episode)
    assert ours.shape == (2, 1, 128, 128)
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)


def test_support_masks_change_the_prediction(tiny_sam2):
    """The memory path is live: other support masks give other query logits."""
    images, masks, query = make_episode(batch=1, shot=1)
    model = FewShotSAM2(tiny_sam2).eval()
    with torch.no_grad():
        a = model(images, masks, query)
        b = model(images, 1 - masks, query)
    assert (a - b).abs().max() > 1e-3


def test_without_lora_the_sam2_model_is_untouched(tiny_sam2, tiny_sam2_state):
    before = {n: type(m) for n, m in tiny_sam2.named_modules()}
    model = FewShotSAM2(tiny_sam2, lora=None)
    assert {n: type(m) for n, m in tiny_sam2.named_modules()} == before
    assert model.lora_layers == []
    assert set(tiny_sam2.state_dict()) == set(tiny_sam2_state)


def test_masks_not_matching_images_is_refused(tiny_sam2):
    images, masks, query = make_episode(batch=1, shot=2)
    with pytest.raises(InputError, match=r"support_masks has shape \(1, 1, 128, 128\).*\[B, K, 128, 128\]"):
        FewShotSAM2(tiny_sam2)(images, masks[:, :1], query)
    with pytest.raises(InputError, match="support_masks"):
        FewShotSAM2(tiny_sam2)(images, masks[..., :64], query)


def test_zero_shot_is_refused(tiny_sam2):
    images, masks, query = make_episode(batch=1, shot=1)
    with pytest.raises(InputError, match="K = 0"):
        FewShotSAM2(tiny_sam2)(images[:, :0], masks[:, :0], query)


def test_wrong_image_size_is_refused(tiny_sam2):
    images, masks, query = make_episode(batch=1, shot=1, size=96)
    with pytest.raises(InputError, match="model's input size 128"):
        FewShotSAM2(tiny_sam2)(images, masks, query)


def test_used_parameters_are_exactly_those_that_get_gradients(tiny_sam2):
    """Full fine-tuning trains `used_parameters()`; under DDP each of them must get a gradient
    in every step, and none left out may be one the forward pass depends on."""
    from fssam2 import LoRAConfig

    model = FewShotSAM2(tiny_sam2, LoRAConfig()).train()
    model.requires_grad_(True)
    model(*make_episode(2, 2)).mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, _ in model.used_parameters()}


@torch.inference_mode()
def test_encoder_batch_gives_the_same_logits(tiny_sam2):
    support, masks, query = make_episode(batch=2, shot=3)
    model = FewShotSAM2(tiny_sam2).eval()
    expected = model(support, masks, query)
    model.encoder_batch = 3  # 8 images in calls of 3, 3 and 2
    calls = []
    model.sam2.image_encoder.register_forward_hook(lambda m, inp, out: calls.append(len(inp[0])))
    torch.testing.assert_close(model(support, masks, query), expected, rtol=1e-5, atol=1e-5)
    assert calls == [3, 3, 2]
    with pytest.raises(InputError, match="encoder_batch=0"):
        FewShotSAM2(tiny_sam2, encoder_batch=0)
