"""SANSA as the second method (fssam2.methods.SANSA): its adapters, the memory it reads, batching,
its released adapter files and the run through the real CLI.

Equality with the official forward (github ClaudiaCuttano/SANSA) is checked outside the repo, on
the same random weights (see docs/methods.md); these tests keep what that check established."""

import argparse
import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import wandb

import fssam2
from fssam2 import InputError
from fssam2.adapters import module_kwargs, read_adapter
from fssam2.cli import run_cli
from fssam2.methods import SANSA, AdapterConfig
from fssam2.methods.sansa import decoder_as_sansa_builds_it
from fssam2.module import FSSAM2Module
from fssam2.plan_report import entry_bytes
from fssam2.segment import Segmenter
from helpers import TESTS, TINY, make_episode, one_line_error

SIZE = 64


def tiny_sansa(adapter: AdapterConfig | None = None, seed: int = 0) -> SANSA:
    torch.manual_seed(seed)
    return SANSA(fssam2.build_sam2("fssam2_tiny", None, image_size=SIZE), adapter).eval()


def bottleneck_params(model: SANSA) -> int:
    """What AdaptFormer adds per adapted block: LayerNorm, down and up projections."""
    total = 0
    for block in model.sam2.image_encoder.trunk.blocks:
        if hasattr(block, "adapter"):
            c, b = block.dim_out, int(block.dim * model.adapter.channel_factor)
            total += 2 * c + (c * b + b) + (b * c + c)
    return total


def test_only_the_adapters_train_and_a_fresh_adapter_changes_nothing():
    plain, adapted = tiny_sansa(AdapterConfig(stages=())), tiny_sansa()
    adapted.sam2.load_state_dict(plain.sam2.state_dict(), strict=False)
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all(".adapter." in n for n in trainable)
    assert sum(p.numel() for p in adapted.trainable_parameters()) == bottleneck_params(adapted)
    assert len(adapted.adapted_blocks) == 3  # fssam2_tiny's stages 2 and 3: 2 + 1 blocks
    episode = make_episode(2, 2, size=SIZE)
    with torch.no_grad():
        before = adapted(*episode)
        torch.testing.assert_close(before, plain(*episode), rtol=0, atol=0)  # up projections start at zero
        for name, p in adapted.named_parameters():
            if "up_proj" in name:
                p.normal_(0, 0.1)
        assert (adapted(*episode) - before).abs().max() > 1e-3


def test_the_decoder_runs_without_its_object_score_token_as_sansa_builds_it_and_is_shared_unchanged():
    model = tiny_sansa()
    decoder = model.sam2.sam_mask_decoder
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "up_proj" in name:
                p.normal_(0, 0.1)
    episode = make_episode(2, 2, size=SIZE, seed=4)
    with torch.no_grad():
        logits = model(*episode)
    assert decoder.pred_obj_scores and decoder.dynamic_multimask_via_stability  # as built, after the call
    built_as_sansa = copy.deepcopy(model)  # SANSA's own build: a decoder without the token at all
    bare = built_as_sansa.sam2.sam_mask_decoder
    del bare.obj_score_token, bare.pred_obj_score_head
    bare.pred_obj_scores, bare.dynamic_multimask_via_stability = False, False
    with torch.no_grad():
        torch.testing.assert_close(built_as_sansa(*episode), logits, rtol=0, atol=0)
    fssam2.FewShotSAM2(model.sam2)(*episode)  # the same SAM2 still serves FS-SAM2, token and all


def test_the_query_reads_frame_0_the_latest_frames_and_their_pointers_in_the_official_order():
    model = tiny_sansa()
    sam2 = model.sam2
    k, hw, c_mem = 9, 4, sam2.mem_dim  # more supports than memory slots (num_maskmem 7)
    supports = [
        {
            "memory": torch.full((1, c_mem, 2, 2), float(f)),
            "position": torch.zeros(1, c_mem, 2, 2),
            "pointer": torch.full((1, sam2.hidden_dim), float(f)),
        }
        for f in range(k)
    ]
    with torch.no_grad():
        memory, position, pointer_tokens = model.memory_of(supports)
    split = sam2.hidden_dim // c_mem
    frames = [0, 3, 4, 5, 6, 7, 8]  # frame 0, then the latest num_maskmem - 1
    assert pointer_tokens == k * split and len(memory) == len(frames) * hw + k * split
    assert memory[: len(frames) * hw : hw, 0, 0].tolist() == frames
    slots = [sam2.num_maskmem - 1] + [k - f - 1 for f in frames[1:]]
    expected = torch.stack([sam2.maskmem_tpos_enc[s].flatten() for s in slots])
    torch.testing.assert_close(position[: len(frames) * hw : hw, 0], expected)
    pointers = memory[len(frames) * hw :: split, 0, 0].tolist()
    assert pointers == [0, 8, 7, 6, 5, 4, 3, 2, 1]  # support 0, then K-1 down to 1
    assert not position[len(frames) * hw :].any()  # pointers carry no position encoding


def test_episodes_in_one_batch_equal_each_alone():
    model = tiny_sansa()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "up_proj" in name:
                p.normal_(0, 0.1)
        support_images, support_masks, query_images = make_episode(3, 2, size=SIZE, seed=1)
        batched = model(support_images, support_masks, query_images)
        alone = torch.cat(
            [model(support_images[i : i + 1], support_masks[i : i + 1], query_images[i : i + 1]) for i in range(3)]
        )
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)
    assert batched.shape == (3, 1, SIZE, SIZE)


def official_adapter_file(model: SANSA, path: Path, prefix: str = "") -> dict:
    """An adapter file as SANSA's main.py writes it: adapter tensors under the official names
    (`sam.` for our `sam2.`), optimiser and schedule state, the argparse Namespace, legacy format."""
    state = {prefix + "sam." + n.removeprefix("sam2."): v.clone() for n, v in model.adapter_state().items()}
    args = argparse.Namespace(adaptformer_stages=[2, 3], channel_factor=0.3, output_dir=Path("output"))
    saved = {"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 4, "args": args}
    torch.save(saved, path, _use_new_zipfile_serialization=False)
    return state


def test_a_weak_support_is_memory_encoded_as_the_official_code_encodes_a_prompted_frame():
    """The official code decodes a prompted support without memory through SAM2's heads (single
    mask) and memory-encodes that decode's soft mask (`is_mask_from_pts` false) with its object
    pointer; SAM2's own functions, called so, are the reference. A mask support beside it keeps the
    mask path."""
    model = tiny_sansa(AdapterConfig(), seed=3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".adapter." in name:
                param.normal_(0, 0.05)  # fresh adapters are zero: make them count
    sam2 = model.sam2
    g = torch.Generator().manual_seed(0)
    images = torch.randn(1, 2, 3, SIZE, SIZE, generator=g)
    masks = torch.zeros(1, 2, SIZE, SIZE)
    masks[:, :, 16:40, 20:50] = 1
    coords = torch.tensor([[[[30.0, 25.0], [22.0, 18.0], [45.0, 35.0]], [[0.0, 0.0]] * 3]])  # [1, 2, 3, 2]
    labels = torch.tensor([[[1, 1, 1], [-1, -1, -1]]])  # support 0: three clicks; support 1: its mask
    with torch.no_grad():
        entries = model.encode_support(images, masks, (coords, labels))
        feats = model.encode_images(images[0, :1])
        saved = sam2.pred_obj_scores
        sam2.pred_obj_scores = False  # SANSA builds SAM2 without the object-score head
        try:
            with decoder_as_sansa_builds_it(sam2.sam_mask_decoder):
                out = sam2._forward_sam_heads(
                    backbone_features=feats.embedding + sam2.no_mem_embed.view(1, -1, 1, 1),
                    point_inputs={"point_coords": coords[0, :1], "point_labels": labels[0, :1].int()},
                    high_res_features=feats.high_res,
                    multimask_output=False,
                )
            high, pointer, score = out[4], out[5], out[6]
            memory, _ = sam2._encode_new_memory(
                [feats.embedding.flatten(2).permute(2, 0, 1)], [feats.embedding.shape[-2:]], high, score, False
            )
        finally:
            sam2.pred_obj_scores = saved
        plain = model.encode_support(images, masks)
        decoded = model.support_masks_from_prompts(images[0], masks[0], coords[0], labels[0])
        binarised = model.encode_support(images, decoded[None])  # the path before: the decoded mask as a mask
    assert torch.allclose(entries[0]["memory"], memory, atol=1e-5, rtol=0)
    assert torch.allclose(entries[0]["pointer"], pointer, atol=1e-5, rtol=0)
    assert not torch.allclose(entries[0]["pointer"], binarised[0]["pointer"], atol=1e-3)
    assert not torch.allclose(entries[0]["memory"], binarised[0]["memory"], atol=1e-3)
    for key in ("memory", "pointer"):
        assert torch.allclose(entries[1][key], plain[1][key], atol=1e-6, rtol=0)  # the mask support's path


def test_released_adapter_files_load_by_their_key_names_and_a_misfit_is_one_line(tmp_path):
    source = tiny_sansa(seed=1)
    with torch.no_grad():
        for p in source.trainable_parameters():
            p.normal_(0, 0.1)
    for prefix in ("", "module."):  # DDP-saved files carry "module."
        official_adapter_file(source, tmp_path / f"adapter{prefix}.pth", prefix)
        target = tiny_sansa(seed=2)
        target.load_official_adapters(tmp_path / f"adapter{prefix}.pth")
        for name, value in source.adapter_state().items():
            assert torch.equal(target.adapter_state()[name], value), name
    wide = tiny_sansa(AdapterConfig(channel_factor=0.8))
    with pytest.raises(InputError, match="does not fit this model .* channel_factor"):
        wide.load_official_adapters(tmp_path / "adapter.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(InputError, match="could not be read"):
        wide.load_official_adapters(tmp_path / "junk.pth")


def test_options_given_to_the_other_method_are_refused(capsys, tmp_path):
    args = ["fit", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path)]
    sansa = [*args, "--model.method", "fssam2.methods.SANSA"]
    one_line_error(capsys, [*sansa, "--model.trainable", "all"], "model.trainable is FS-SAM2's, not SANSA's")
    one_line_error(capsys, [*args, "--model.method_args", '{"adapter": {}}'], "FS-SAM2 takes its options as")
    one_line_error(
        capsys,
        [*sansa, "--model.method_args", '{"adapter": {"width": 2}}'],
        "model.method_args.adapter has no option width",
    )
    for adapter, message in (
        ({"channel_factor": "x"}, "channel_factor='x' (give a number > 0)"),
        ({"scale": None}, "scale=None (give a finite number)"),
        ({"stages": 2}, "stages=2 (give Hiera stage numbers"),
    ):
        one_line_error(capsys, [*sansa, "--model.method_args", json.dumps({"adapter": adapter})], message)


def test_the_demo_switched_to_sansa_is_told_every_flag_to_add_and_those_flags_work(capsys, tmp_path):
    run = ["--config", str(TESTS.parent / "configs" / "demo.yaml"), "--model.method", "fssam2.methods.SANSA",
           "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    one_line_error(capsys, ["fit", *run], "model.lora is FS-SAM2's, not SANSA's: drop it with --model.lora null (")
    for given in ([], ["--model.trainable", "all", "--model.merge_lora", "false"]):
        err = one_line_error(capsys, ["fit", *run, *given], "FS-SAM2's, not SANSA's: drop")
        advice = re.search(r"drop (?:it|them) with (.*?) \(give", err)
        assert advice is not None, err
        flags = advice.group(1).split()
        assert flags[::2] == [f"--model.{n}" for n in ("lora", "merge_lora", "trainable") if n == "lora" or given]
        run_cli(["doctor", *run, *given, *flags, "--no-measure"])  # fit's own checks, up to the first step
        out = capsys.readouterr().out
        assert "ok    config    fssam2 fit accepts these options" in out, out
    assert not (tmp_path / "run").exists()


def test_sansa_trains_tests_exports_and_segments_through_the_cli(tmp_path, capsys):
    base = tmp_path / "base.pt"
    torch.manual_seed(3)
    torch.save({"model": fssam2.build_sam2("fssam2_tiny", None, image_size=SIZE).state_dict()}, base)
    run = tmp_path / "run"
    common = ["--config", str(TINY), "--trainer.default_root_dir", str(run), "--model.method", "fssam2.methods.SANSA"]
    common += ["--model.sam2_checkpoint", str(base)]
    method_args = json.dumps({"adapter": {"stages": [2, 3], "channel_factor": 0.5}})
    wandb_logger = ["--trainer.logger", "lightning.pytorch.loggers.WandbLogger", "--trainer.logger.offline", "true"]
    run_cli(["fit", *common, "--model.method_args", method_args, "--trainer.max_epochs", "1", *wandb_logger])
    wandb.finish()  # flush the offline run to disk
    (wandb_run,) = (run / "wandb").glob("offline-run-*")
    (record,) = wandb_run.glob("run-*.wandb")  # an offline run keeps its config in its record
    logged = record.read_bytes()
    assert b"fssam2.methods.SANSA" in logged and b"channel_factor" in logged  # W&B records the method and its options
    best = run / "checkpoints" / "best.ckpt"
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["method"] == "fssam2.methods.SANSA"
    adapters = [k for k in ckpt["state_dict"] if ".adapter." in k]
    optimised = sum(len(group["params"]) for group in ckpt["optimizer_states"][0]["param_groups"])
    assert adapters and optimised == len(adapters)  # only the adapters train
    ups = [ckpt["state_dict"][k] for k in adapters if "up_proj.weight" in k]
    assert all(w.abs().sum() > 0 for w in ups)  # they moved from their zero start
    run_cli(["test", *common, "--ckpt_path", str(best)])  # the adapter options come from the checkpoint
    results = json.loads((run / "test_metrics.json").read_text())
    assert 0 <= results["miou"] <= 100 and results["episodes"] == 25
    assert (results["method"], results["sam2_config"]) == ("SANSA", "fssam2_tiny")

    adapter = tmp_path / "sansa.safetensors"
    run_cli(["export", str(best), "--output", str(adapter)])
    tensors, metadata = read_adapter(adapter)
    assert set(tensors) == {k.removeprefix("model.") for k in adapters}
    assert metadata["method"] == "fssam2.methods.SANSA" and json.loads(metadata["method_args"]) == json.loads(
        method_args
    )
    with pytest.raises(SystemExit) as refused:
        run_cli(["export", str(best), "--merge", str(tmp_path / "merged.pt")])
    assert refused.value.code == 2 and "no plain SAM2 to write" in capsys.readouterr().err
    assert not (tmp_path / "merged.pt").exists()

    module = FSSAM2Module(**module_kwargs(ckpt))
    module.load_state_dict(ckpt["state_dict"])
    from_file, trained = Segmenter.from_pretrained(adapter=adapter), Segmenter(module.model)
    assert isinstance(from_file.model, SANSA)
    g = np.random.default_rng(0)
    images = [g.integers(0, 255, (50, 70, 3), dtype=np.uint8) for _ in range(3)]
    masks = [np.zeros((50, 70), bool) for _ in range(2)]
    masks[0][10:30, 20:40], masks[1][5:25, 30:60] = True, True
    for seg in (from_file, trained):
        seg.set_support(images[:2], masks)
    torch.testing.assert_close(from_file.logits(images[2]), trained.logits(images[2]))
    assert from_file.predict(images[2]).shape == (50, 70)


def test_at_the_official_input_size_images_are_resized_inside_and_scored_there():
    torch.manual_seed(0)
    model = SANSA(fssam2.build_sam2("fssam2_tiny", None, image_size=SIZE), input_size=48).eval()
    assert model.image_size == 48 and model.sam2.image_size == SIZE
    support_images, support_masks, query_images = make_episode(2, 1, size=48)
    with torch.no_grad():
        logits = model(support_images, support_masks, query_images)
    assert logits.shape == (2, 1, 48, 48)
    target = torch.zeros(100, 80, dtype=torch.long)
    target[:50] = 1
    target[50:, :4] = 255
    preds, scored = model.score(torch.ones(1, 1, 48, 48), [target])
    assert preds[0].shape == scored[0].shape == (48, 48)  # the official scores at its loader's size
    assert set(scored[0].unique().tolist()) == {0, 1, 255} and scored[0][:24].eq(1).all()  # resized nearest
    with pytest.raises(InputError, match=r"expected \[B, K, 3, 48, 48\]"):
        model(*make_episode(1, 1, size=SIZE))


def test_sansa_loss_is_focal_plus_dice_and_leaves_out_ignored_pixels():
    model = tiny_sansa()
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(2, 16, 16, generator=g) * 3, (torch.rand(2, 16, 16, generator=g) > 0.5).long()
    marked = target.clone()
    marked[:, :4] = 255
    loss = model.loss(logits, target)
    assert loss > 0 and model.loss(torch.where(target == 1, 20.0, -20.0), target) < 1e-3  # perfect logits: ~0
    changed = logits.clone()
    changed[:, :4] = -logits[:, :4]  # only the ignored rows change
    torch.testing.assert_close(model.loss(changed, marked), model.loss(logits, marked))
    assert not torch.allclose(model.loss(changed, target), loss)


@pytest.mark.parametrize("annotation", ["mask", "mixed"])
def test_the_feature_cache_holds_sansa_memories_with_their_pointers_and_changes_no_number(tmp_path, annotation):
    def test(name, *options):
        cli = run_cli([
            "test", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path / name),
            "--model.method", "fssam2.methods.SANSA", "--data.init_args.shot", "2",
            "--data.init_args.support_annotation", annotation, *options,
        ])  # fmt: skip
        return {k: float(v) for k, v in cli.trainer.callback_metrics.items()}

    plain = test("plain", "--model.feature_cache", "null")
    cached = test("cached")  # planned order, the default budget
    assert cached["test/miou"] == pytest.approx(plain["test/miou"], abs=1e-4)
    assert cached["test/fbiou"] == pytest.approx(plain["test/fbiou"], abs=1e-4)
    assert cached["test/support_gap"] == pytest.approx(plain["test/support_gap"], abs=1e-4)
    # 25 episodes (and the support-gap episodes) x (2 supports + 1 query) against a 60-image pool
    assert cached["test/encoder_passes"] <= 60 and "test/encoder_passes" not in plain
    if annotation == "mask":  # a weak support's memory is keyed by its prompt, drawn per episode
        assert cached["test/memory_encoder_passes"] < 2 * 25


def test_the_plan_report_sizes_sansa_memories_with_their_pointers(capsys, tmp_path):
    sansa = tiny_sansa()
    fssam2_model = fssam2.FewShotSAM2(sansa.sam2)  # the same SAM2: the same image features and memory maps
    for size in (64, 128):
        image, memory = entry_bytes(sansa, size)
        assert image == entry_bytes(fssam2_model, size)[0]
        assert memory == entry_bytes(fssam2_model, size)[1] + sansa.sam2.hidden_dim * 4  # + a float32 pointer
    run_cli(["test", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path / "run"),
             "--model.method", "fssam2.methods.SANSA", "--model.feature_cache.plan_only", "true"])  # fmt: skip
    out = capsys.readouterr().out
    assert f"{entry_bytes(sansa, SIZE)[1] / 2**20:.3g} MB a support memory" in out
    assert not (tmp_path / "run").exists()
