"""GF-SAM as the training-free method (fssam2.methods.GFSAM): its maths step by step, the stand-in
predictor, the support deciding the mask, batching and the feature cache, its DINOv2 weights, and
the run through the real CLI (test with no checkpoint; fit refused).

Equality with the official forward (github ANDYZAQ/GF-SAM) is checked outside the repo, on the same
random weights and a disk stand-in (see docs/methods.md); these tests keep what that check established."""

import json
import sys

import numpy as np
import pytest
import torch
import wandb
from torch import nn

import fssam2
from fssam2 import InputError
from fssam2.cache import CacheConfig, FeatureCache, image_key, memory_key
from fssam2.cli import run_cli
from fssam2.methods import GFSAM
from fssam2.methods.dinov2 import SemanticEncoder, build_semantic_encoder, dinov2_vit
from fssam2.methods.features import EpisodeKeys
from fssam2.methods.gfsam import (
    classify_clusters,
    cosine_similarities,
    find_points,
    mean_prior,
    point_consistency,
    prior,
    prompt_coords,
    select_masks,
    weak_clusters,
)
from fssam2.plan_report import entry_bytes
from helpers import TINY, load_script, make_episode, one_line_error

SIZE = 64


class ColourTokens(nn.Module):
    """A semantic encoder whose token is the mean colour of its cell: classes that differ by colour
    are told apart as DINOv2 tells real ones."""

    name = "colour"

    def __init__(self, grid: int = 16) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cells = nn.functional.adaptive_avg_pool2d(images, self.grid)
        return cells.flatten(2).transpose(1, 2) + 3.0  # positive, so every cell has a direction


def tiny_gfsam(encoder: nn.Module | None = None, radius: float | None = 6.0, seed: int = 0) -> GFSAM:
    torch.manual_seed(seed)
    return GFSAM(fssam2.build_sam2("fssam2_tiny", None, image_size=SIZE), encoder, radius).eval()


def scene(*squares: tuple[tuple[float, float, float], slice, slice]) -> torch.Tensor:
    """A gray image [3, S, S] with coloured squares."""
    image = torch.zeros(3, SIZE, SIZE)
    for colour, rows, cols in squares:
        image[:, rows, cols] = torch.tensor(colour)[:, None, None]
    return image


RED, GREEN = (2.0, -1.0, -1.0), (-1.0, 2.0, -1.0)


def test_the_priors_peak_where_the_query_matches_the_masked_support_tokens():
    g = torch.Generator().manual_seed(0)
    side = 4
    support = torch.randn(1, side * side, 8, generator=g)
    query = torch.randn(side * side, 8, generator=g)
    query[5] = support[0, 3] * 2  # the same direction as a masked support token
    fg = torch.zeros(1, side * side)
    fg[0, 3] = 1
    sims = cosine_similarities(query, support)
    assert sims.shape == (1, 16, 16) and sims[0, 3, 5] == pytest.approx(1.0, abs=1e-6)
    peak, mean = prior(sims, fg, side)
    assert peak.shape == mean.shape == (1, side, side)
    assert peak.flatten().argmax() == 5 and peak.flatten()[5] == pytest.approx(1.0, abs=1e-6)
    # the mean prior divides the masked mean by the masked share (1 of 16 tokens): the similarity itself
    torch.testing.assert_close(mean.flatten(), sims[0, 3] / (1 + 16e-7), rtol=1e-5, atol=1e-6)


def test_the_mean_prior_alone_is_the_priors_mean_bit_for_bit():  # point consistency reads it so, per cluster
    g = torch.Generator().manual_seed(1)
    side = 6
    query, supports = torch.randn(side * side, 8, generator=g), torch.randn(3, side * side, 8, generator=g)
    masks = (torch.rand(3, side * side, generator=g) > 0.5).float()
    sims = cosine_similarities(query, supports)
    for k in (slice(0, 1), slice(0, 3)):
        assert torch.equal(mean_prior(sims[k], masks[k], side), prior(sims[k], masks[k], side)[1])


def test_points_are_the_top_cells_in_the_official_order_and_prompts_their_truncated_corners():
    sim = torch.zeros(1, 5, 5)
    sim[0, 1, 3], sim[0, 4, 0], sim[0, 2, 2] = 0.9, 0.8, 0.7  # (y, x)
    sim[0, 0, 0] = 0.1
    points, hot = find_points(sim)  # sum 2.5 -> the top 2
    assert points.tolist() == [[0, 4], [3, 1]]  # (x, y), by x then y
    assert hot.sum() == 2 and hot[1, 3] == 1 and hot[4, 0] == 1
    assert find_points(sim * 0.1)[0].tolist() == [[3, 1]]  # a positive sum below 1 still gives one point
    assert len(find_points(torch.zeros(1, 5, 5))[0]) == 0
    assert len(find_points(torch.ones(1, 20, 20))[0]) == 128  # capped
    # cell (x, y) -> its corner scaled by S / side in float64, truncated: 1024 / 37 * 36 = 996.3
    assert prompt_coords(torch.tensor([[36, 1]]), 37, 1024).tolist() == [[996, 27]]


def test_the_graph_joins_points_whose_masks_cover_each_other_weakly():
    size, side = 16, 4
    points = torch.tensor([[0, 0], [1, 0], [3, 3]])  # (x, y) on a 4 x 4 grid
    hot = torch.zeros(side, side)
    hot[0, 0] = hot[0, 1] = hot[3, 3] = 1
    masks = torch.zeros(3, 1, size, size, dtype=torch.bool)
    masks[0, 0, :4, :8] = True  # covers cells (0, 0) and (1, 0): points 0 and 1
    masks[1, 0, :4, 4:8] = True  # covers its own point only: joined to 0 through 0's edge
    masks[2, 0, 12:, 12:] = True
    count, labels = weak_clusters(masks, points, hot)
    assert count == 2 and labels.tolist() == [0, 0, 1]


def test_mask_growth_keeps_masks_that_add_more_positive_than_negative_cells():
    size, side = 16, 4
    masks = torch.zeros(3, 1, size, size, dtype=torch.bool)
    masks[0, 0, :8, :8] = True  # on the positive quarter
    masks[1, 0, :8, :16] = True  # half positive: what it adds beyond mask 0 is negative
    masks[2, 0, 8:, 8:] = True  # negative
    pos = torch.zeros(1, side, side)
    pos[0, :2, :2] = 1.0
    neg = torch.full((1, side, side), 0.5)
    labels = torch.tensor([0, 0, 1])
    fg, scores = classify_clusters(masks, labels, 2, pos, neg, side)
    assert fg.tolist() == [1, 0, 0]
    assert scores[2] < 0 and scores[0] == scores[1]  # a cluster's score is its last grown mask's


def test_point_consistency_and_selection_follow_the_official_labels():
    side, size = 4, 16
    tokens = torch.eye(16)[:, :8] + 0.1  # points 0 and 1 alike, point 2 alike neither
    tokens[1] = tokens[0]
    sims = cosine_similarities(tokens, tokens[None])
    points = torch.tensor([[0, 0], [1, 0], [3, 3]])
    masks = torch.zeros(3, 1, size, size, dtype=torch.bool)
    masks[0, 0, :4, :4] = masks[1, 0, :4, 4:8] = masks[2, 0, 12:, 12:] = True
    labels = torch.tensor([0, 0, 1])
    selection = point_consistency(sims, masks, labels, 2, torch.tensor([1, 1, 0]), points, side)
    assert selection.tolist() == [1, 1, 2]  # consistent and foreground; consistent only
    mean = torch.rand(1, side, side, generator=torch.Generator().manual_seed(0))
    mask, prob = select_masks(masks.float(), selection, mean, torch.tensor([0.0, 0.0, 1.0]))
    assert mask.bool().equal(masks[0, 0] | masks[1, 0])
    assert prob[masks[2, 0]].eq(0).all() and prob[masks[0, 0]].gt(0).all()
    # none labelled 1: the best-scored mask among the candidates (2)
    mask, _ = select_masks(masks.float(), torch.tensor([0, 2, 2]), mean, torch.tensor([5.0, 1.0, 3.0]))
    assert mask.bool().equal(masks[2, 0])


def test_the_support_decides_which_object_the_disk_stand_in_finds():
    model = tiny_gfsam(ColourTokens())
    query = scene((RED, slice(8, 24), slice(8, 24)), (GREEN, slice(36, 56), slice(36, 56)))
    red = scene((RED, slice(30, 50), slice(10, 30)))
    green = scene((GREEN, slice(10, 30), slice(30, 50)))
    mask_red, mask_green = red.abs().sum(0) > 0, green.abs().sum(0) > 0
    supports = torch.stack([red, green])[:, None]
    with torch.no_grad():
        logits = model(supports, torch.stack([mask_red, mask_green])[:, None].float(), torch.stack([query, query]))
    found = logits[:, 0] > 0
    on_red, on_green = query[0] > 1, query[1] > 1
    assert found[0][on_red].float().mean() > 0.8 and not found[0][on_green].any()
    assert found[1][on_green].float().mean() > 0.8 and not found[1][on_red].any()
    assert set(logits.unique().tolist()) == {-10.0, 10.0}


def test_a_segmenter_on_gfsam_takes_masks_or_prompts_and_finds_the_support_colour():
    from fssam2.segment import Segmenter

    model = tiny_gfsam(ColourTokens())
    pixels = ((scene((RED, slice(8, 24), slice(8, 24)), (GREEN, slice(36, 56), slice(36, 56))) + 1.5) * 60).clamp(
        0, 255
    )
    query = pixels.permute(1, 2, 0).byte().numpy()  # uint8 RGB: red top left, green bottom right
    seg = Segmenter(model)
    seg.set_support([query], [np.asarray(query[..., 1] > 200)])  # the green square's mask
    found = seg.predict(query)
    assert found.shape == (SIZE, SIZE) and found[40:52, 40:52].mean() > 0.8 and not found[8:24, 8:24].any()
    seg.set_support([query], [{"points": [[15, 15]]}])  # a point on the red square, decoded by SAM2 (random)
    assert seg.support_masks[0].shape == (SIZE, SIZE) and seg.predict(query).shape == (SIZE, SIZE)


# sam2's image predictor scripts its transforms with torch.jit.script, which torch 2.14 deprecates.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_the_sam2_path_decodes_each_point_as_sams_image_predictor():
    torch.manual_seed(0)
    sam2 = fssam2.build_sam2("fssam2_tiny", "fssam2_tiny_pointers", image_size=128)
    model = GFSAM(sam2, build_semantic_encoder("dinov2_tiny", "random")).eval()
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    g = np.random.default_rng(0)
    image = g.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    predictor = SAM2ImagePredictor(sam2)
    predictor._bb_feat_sizes = [(128 // s, 128 // s) for s in (4, 8, 16)]  # it assumes 1024 px
    predictor.set_image(image)
    coords = torch.tensor([[20, 30], [90, 64], [5, 120]], dtype=torch.int32)
    with torch.no_grad():
        ours = model.point_masks(model.encode_images(predictor._transforms(image)[None]), coords)
        theirs = [predictor.predict(c[None].numpy(), np.ones(1), multimask_output=False)[0] for c in coords]
    assert ours.shape == (3, 1, 128, 128)
    for mask, official in zip(ours, theirs, strict=True):
        assert torch.equal(mask, torch.from_numpy(official).bool())


def test_a_batch_equals_its_episodes_alone_and_the_feature_cache_changes_nothing():
    model = tiny_gfsam(build_semantic_encoder("dinov2_tiny", "random"))
    supports, masks, queries = make_episode(3, 2, size=SIZE, seed=1)
    masks[2] = 0  # the blank control: every support empty, the official central square
    with torch.no_grad():
        batch = model(supports, masks, queries)
        alone = torch.cat([model(supports[i : i + 1], masks[i : i + 1], queries[i : i + 1]) for i in range(3)])
        model.feature_cache = FeatureCache(CacheConfig())
        ids = [[f"s{i}{k}" for k in range(2)] for i in range(3)]
        keys = EpisodeKeys(
            supports=[image_key("test", s, SIZE) for e in ids for s in e],
            memories=[memory_key(image_key("test", s, SIZE), 1) for e in ids for s in e],
            queries=[image_key("test", f"q{i}", SIZE) for i in range(3)],
        )
        cached = model(supports, masks, queries, keys)
        again = model(supports, masks, queries, keys)
    torch.testing.assert_close(batch, alone, rtol=0, atol=0)
    torch.testing.assert_close(cached, batch, rtol=0, atol=0)
    torch.testing.assert_close(again, batch, rtol=0, atol=0)
    stats = model.feature_cache.stats
    assert stats["memory"].computed == 6 and stats["image"].computed == 3  # each once, then hits


def test_gfsam_runs_under_bf16_autocast():  # `--trainer.precision bf16-mixed`: the maps are bfloat16
    model = tiny_gfsam(build_semantic_encoder("dinov2_tiny", "random"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(*make_episode(1, 2, size=SIZE, seed=1))
    assert set(logits.unique().tolist()) <= {-10.0, 10.0}


def test_a_support_seen_before_as_a_query_takes_its_tokens_from_the_cache_not_its_unshipped_pixels():
    model = tiny_gfsam(build_semantic_encoder("dinov2_tiny", "random"))
    supports, masks, queries = make_episode(1, 1, size=SIZE, seed=2)
    other = make_episode(1, 1, size=SIZE, seed=3)
    key = image_key("test", "x", SIZE)  # image x: the query of step 1, the support of step 2
    with torch.no_grad():
        expected = model(queries[:, None], masks, other[2])
        model.feature_cache = FeatureCache(CacheConfig())
        model(other[0], other[1], queries, EpisodeKeys([image_key("test", "o", SIZE)], [("o", 1)], [key]))
        unshipped = torch.zeros_like(queries[:, None])  # a lean batch ships no pixels the cache holds
        got = model(
            unshipped, masks, other[2], EpisodeKeys([key], [memory_key(key, 1)], [image_key("test", "q", SIZE)])
        )
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_dinov2_weights_load_from_timm_or_meta_keys_and_a_misfit_is_one_line(tmp_path):
    torch.manual_seed(0)
    vit = dinov2_vit("dinov2_tiny")
    state = vit.state_dict()
    meta = {**state, "mask_token": torch.zeros(1, vit.embed_dim)}  # Meta's file has the iBOT mask token
    torch.save(meta, tmp_path / "dinov2_tiny_pretrain.pth")
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "model.safetensors"))
    images = torch.randn(2, 3, SIZE, SIZE)
    expected = SemanticEncoder(vit)(images)
    assert expected.shape == (2, 49, 48)  # 98 px / 14: a 7 x 7 grid, the class token left out
    for name in ("dinov2_tiny_pretrain.pth", "model.safetensors"):
        loaded = build_semantic_encoder("dinov2_tiny", str(tmp_path / name))
        torch.testing.assert_close(loaded(images), expected, rtol=0, atol=0)
    save_file({k: v for k, v in state.items() if k != "norm.weight"}, str(tmp_path / "short.safetensors"))
    with pytest.raises(InputError, match=r"do not fit encoder dinov2_tiny: missing \['norm.weight'\]"):
        build_semantic_encoder("dinov2_tiny", str(tmp_path / "short.safetensors"))
    with pytest.raises(InputError, match="has no released weights"):
        build_semantic_encoder("dinov2_tiny")
    with pytest.raises(InputError, match="not a known encoder"):
        build_semantic_encoder("dinov3")


def test_released_dinov2_is_fetched_by_name_and_offline_says_where(capsys):
    # The tests' Hub is offline with an empty cache: no download, one line naming the repo and the cache file.
    err = one_line_error(capsys, ["download", "dinov2_vitl14"], "timm/vit_large_patch14_dinov2.lvd142m")
    assert "dinov2_vitl14.safetensors" in err


def test_fit_is_refused_in_one_line_and_writes_nothing(capsys, tmp_path):
    run = tmp_path / "run"
    one_line_error(
        capsys,
        [
            "fit",
            "--config",
            str(TINY),
            "--trainer.default_root_dir",
            str(run),
            "--model.method",
            "fssam2.methods.GFSAM",
        ],
        "is training-free",
    )
    assert not run.exists()
    args = [
        "test",
        "--config",
        str(TINY),
        "--trainer.default_root_dir",
        str(run),
        "--model.method",
        "fssam2.methods.GFSAM",
    ]
    one_line_error(capsys, [*args, "--model.method_args", '{"radius": 3}'], "GFSAM has no option radius")
    one_line_error(capsys, [*args, "--model.encoder_batch", "2"], "model.encoder_batch is FS-SAM2's, not GFSAM's")


def test_the_plan_report_sizes_gfsam_entries_without_fetching_dinov2(capsys, tmp_path):
    model = tiny_gfsam(build_semantic_encoder("dinov2_tiny", "random"))
    image, memory = entry_bytes(model, SIZE)
    grid = 7 * 7  # dinov2_tiny: 98 px / 14
    assert memory == (grid * 48 + 2 * grid + 1) * 4  # tokens, mask and complement on the grid, area (float32)
    assert image == entry_bytes(fssam2.FewShotSAM2(model.sam2), SIZE)[0] + grid * 48 * 4  # SAM2's maps + tokens
    run_cli(["test", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path / "run"),
             "--model.method", "fssam2.methods.GFSAM", "--model.method_args", '{"encoder": "dinov2_tiny"}',
             "--model.feature_cache.plan_only", "true"])  # fmt: skip
    assert f"{memory / 2**20:.3g} MB a support memory" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_gfsam_tests_through_the_cli_with_no_checkpoint(tmp_path):
    run = tmp_path / "run"
    method_args = json.dumps({"encoder": "dinov2_tiny", "encoder_checkpoint": "random"})
    args = ["--config", str(TINY), "--trainer.default_root_dir", str(run), "--model.method", "fssam2.methods.GFSAM"]
    wandb_logger = ["--trainer.logger", "lightning.pytorch.loggers.WandbLogger", "--trainer.logger.offline", "true"]
    cli = run_cli(
        ["test", *args, "--model.method_args", method_args, "--data.init_args.test_episodes", "8", *wandb_logger]
    )
    wandb.finish()  # flush the offline run to disk
    results = json.loads((run / "test_metrics.json").read_text())
    assert results["method"] == "GFSAM" and results["episodes"] == 8 and 0 <= results["miou"] <= 100
    metrics = cli.trainer.callback_metrics
    assert "test/support_gap" in metrics and "test/encoder_passes" in metrics
    (record,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"fssam2.methods.GFSAM" in record.read_bytes() and b"dinov2_tiny" in record.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("annotation", ["mask", "mixed"])
def test_the_planned_feature_cache_changes_no_gfsam_number_with_masks_or_weak_supports(tmp_path, annotation):
    method_args = json.dumps({"encoder": "dinov2_tiny", "encoder_checkpoint": "random", "disk_radius": 8})

    def test(name, *options):
        cli = run_cli([
            "test", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path / name),
            "--model.method", "fssam2.methods.GFSAM", "--model.method_args", method_args,
            "--data.init_args.shot", "2", "--data.init_args.support_annotation", annotation,
            "--data.init_args.test_episodes", "12", *options,
        ])  # fmt: skip
        return {k: float(v) for k, v in cli.trainer.callback_metrics.items()}

    plain = test("plain", "--model.feature_cache", "null")
    cached = test("cached")  # planned order, the default budget: lean batches, images read late
    for key in ("test/miou", "test/fbiou", "test/support_gap"):
        assert cached[key] == pytest.approx(plain[key], abs=1e-4), key
    assert cached["test/encoder_passes"] <= 60 and "test/encoder_passes" not in plain  # a 60-image pool
    if annotation == "mask":
        assert cached["test/memory_encoder_passes"] < 2 * 12  # each support's tokens and mask once
    else:
        assert 0 <= cached["test/support_mask_iou"] <= 100  # weak supports decoded by SAM2, scored


@pytest.mark.slow
def test_gfsam_over_two_processes_equals_one(tmp_path):
    method_args = json.dumps({"encoder": "dinov2_tiny", "encoder_checkpoint": "random", "disk_radius": 8})
    args = ["--config", str(TINY), "--model.method", "fssam2.methods.GFSAM", "--model.method_args", method_args]
    args += ["--data.init_args.test_episodes", "10", "--data.init_args.gap_episodes", "4"]
    one = run_cli(["test", *args, "--trainer.default_root_dir", str(tmp_path / "one")]).trainer
    two = run_cli([
        "test", *args, "--trainer.default_root_dir", str(tmp_path / "two"),
        "--trainer.strategy", "ddp_spawn", "--trainer.devices", "2",
    ]).trainer  # fmt: skip
    assert two.world_size == 2
    for key in ("test/miou", "test/fbiou", "test/gap_miou_true", "test/gap_miou_swap"):
        assert two.callback_metrics[key].item() == one.callback_metrics[key].item(), key


def test_the_bench_against_the_official_code_says_how_to_get_it_when_the_folder_is_not_it(
    tmp_path, monkeypatch, capsys
):
    bench = load_script("bench_gfsam", monkeypatch)
    monkeypatch.setattr(bench, "build_sam2", lambda *a, **k: pytest.fail("a model was built"))
    (tmp_path / "matcher").mkdir()  # a folder, but without matcher/GFSAM.py
    for folder in (tmp_path / "missing", tmp_path):
        with pytest.raises(SystemExit) as exit_:
            bench.main(["--official", str(folder)])
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_.value.code == 2
        assert f"--official {folder} holds no matcher/GFSAM.py" in last
        assert "git clone https://github.com/ANDYZAQ/GF-SAM" in last


@pytest.mark.slow
def test_the_fold_bench_counts_both_gfsam_encoders_against_the_folds_images(tmp_path, monkeypatch):
    bench = load_script("bench_fold_cache", monkeypatch)
    monkeypatch.setattr(sys, "argv", ["bench_fold_cache.py"])  # main clears the arguments LightningCLI would see
    out = tmp_path / "fold.json"
    fold = ["--queries", "30", "--episodes", "16", "--batch-size", "4", "--image-side", "96", "--shot", "5"]
    bench.main(["--method", "gfsam", *fold, "--json", str(out)])
    runs = json.loads(out.read_text())["runs"]
    plain, cached = runs["published loop (no cache)"], runs["fssam2 (feature + decoded-image cache)"]
    items = plain["passes"]  # uncached: SAM2 sees each item's query (the episodes and the support-gap items)
    assert items >= 16 and plain["dinov2_passes"] == 6 * items  # DINOv2 its query and its 5 supports
    # cached: DINOv2 sees each image once; SAM2 each query image once, and a support's image only when the
    # plan shows it again later (its image entry then serves that step: a support needs only its tokens)
    assert cached["dinov2_passes"] == cached["test/distinct_images"] < plain["dinov2_passes"]
    assert cached["distinct_queries"] <= cached["passes"] <= cached["test/distinct_images"]
    assert cached["passes"] < items
    assert cached["test/miou"] == plain["test/miou"] and cached["test/fbiou"] == plain["test/fbiou"]
