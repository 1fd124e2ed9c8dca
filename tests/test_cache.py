"""The evaluation fast path: the encoder feature cache and LoRA merged while evaluating."""

import pytest
import torch

from fssam2 import InputError
from fssam2.cache import CacheConfig, FeatureCache
from fssam2.cli import run_cli
from fssam2.lora import LoRAConfig, lora_layers, merge_lora_, unmerge_lora_, unmerged_weights
from fssam2.methods.fssam2 import EpisodeKeys, FewShotSAM2
from fssam2.module import FSSAM2Module
from helpers import TESTS, make_episode, one_line_error

MB = 2**20


def entry(value: float, megabytes: float = 1.0) -> tuple[torch.Tensor, ...]:
    n = int(megabytes * MB) // 4 // 2
    return (torch.full((n,), float(value)), torch.full((n,), value + 0.5))


def fetch(cache: FeatureCache, *keys: str, megabytes: float = 1.0) -> list:
    """Entries of `keys`, computing a missing key k as entry(ord(k))."""
    return cache.fetch("image", keys, lambda positions: [entry(ord(keys[i]), megabytes) for i in positions])


def test_cache_evicts_least_recently_used_by_bytes():
    cache = FeatureCache(CacheConfig(max_megabytes=2.5))
    fetch(cache, "a", "b", "a")  # a twice in one batch: computed once
    assert cache.stats["image"].computed == 2 and cache.stats["image"].hits == 1
    fetch(cache, "a")  # a is now the most recently used
    fetch(cache, "c")  # 3 MB > 2.5 MB: b goes
    assert ("image", "b") not in cache and ("image", "a") in cache and ("image", "c") in cache
    assert cache.nbytes == 2 * MB
    (a,) = fetch(cache, "a")
    assert a[0][0] == ord("a") and a[1][0] == ord("a") + 0.5
    s = cache.stats["image"]
    assert (s.lookups, s.computed, s.hits, s.evictions) == (6, 3, 3, 1)
    fetch(cache, "b")
    assert s.computed == 4  # b was dropped, so it is computed again
    too_big = FeatureCache(CacheConfig(max_megabytes=0.5))
    fetch(too_big, "x", "x")
    fetch(too_big, "x")
    assert too_big.stats["image"].computed == 2 and too_big.nbytes == 0


def test_cache_spills_to_disk_and_reads_back(tmp_path):
    cache = FeatureCache(CacheConfig(max_megabytes=1.5, spill_dir=str(tmp_path / "spill")))
    (first,) = fetch(cache, "a")
    fetch(cache, "b")  # a spills
    (folder,) = (tmp_path / "spill").iterdir()
    assert len(list(folder.iterdir())) == 1 and ("image", "a") in cache
    (back,) = fetch(cache, "a")  # read back; b spills in turn
    assert all(torch.equal(x, y) for x, y in zip(back, first, strict=True))
    (b,) = fetch(cache, "b")
    assert torch.equal(b[0], entry(ord("b"))[0])
    s = cache.stats["image"]
    assert (s.computed, s.disk_reads, s.hits) == (2, 2, 2)
    cache.close()
    assert not folder.exists()


def test_cache_half_precision_halves_memory_and_returns_the_original_dtype():
    cache = FeatureCache(CacheConfig(half=True))
    value = (torch.randn(1000, dtype=torch.float32),)
    cache.fetch("image", ["a"], lambda positions: [value])
    assert cache.nbytes == 2000
    (back,) = cache.fetch("image", ["a"], lambda positions: pytest.fail("a is cached"))[0]
    assert back.dtype == torch.float32 and not torch.equal(back, value[0])
    assert torch.allclose(back, value[0], rtol=1e-3, atol=1e-4)


def test_bad_cache_options_are_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(Exception, match="spill_dir"):
        FeatureCache(CacheConfig(spill_dir=str(blocker / "sub")))
    for budget in (-1, float("nan"), float("inf")):
        with pytest.raises(InputError, match=rf"model.feature_cache.max_megabytes={budget} is not a budget"):
            CacheConfig(max_megabytes=budget)


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("fit", "--model.feature_cache.max_megabytes", "-1"),  # used only at the first validation, after an epoch
        ("fit", "--data.init_args.image_cache_mb", "-5"),  # was read as "no image cache"
        ("test", "--model.feature_cache.max_megabytes", "-0.5"),
    ],
)
def test_negative_cache_budgets_are_refused_in_one_line(tmp_path, capsys, command, option, value):
    run_dir = tmp_path / "run"
    args = [command, "--config", str(TESTS / "configs" / "tiny.yaml"), "--trainer.default_root_dir", str(run_dir)]
    key = option.removeprefix("--").replace(".init_args", "")
    one_line_error(capsys, [*args, option, value], f"{key}={float(value)} is not a budget: give megabytes >= 0")
    if command == "test":  # the plan report reads the budget without making a cache
        one_line_error(capsys, [*args, option, value, "--model.feature_cache.plan_only", "true"], "is not a budget")
    assert not run_dir.exists()


@torch.inference_mode()
def test_cached_forward_equals_uncached_and_encodes_each_image_once(tiny_sam2):
    model = FewShotSAM2(tiny_sam2, LoRAConfig()).eval()
    support, masks, query = make_episode(batch=3, shot=2)
    # Episode 1's second support is episode 0's first with the same mask (one memory); episode
    # 2's first support is that image with another mask (a new memory, not a new image);
    # episode 2's query is episode 0's query.
    support[1, 1], masks[1, 1] = support[0, 0], masks[0, 0]
    support[2, 0] = support[0, 0]
    query[2] = query[0]
    keys = EpisodeKeys(
        supports=["s0", "s1", "s2", "s0", "s0", "s5"],
        memories=[("s0", 1), ("s1", 1), ("s2", 1), ("s0", 1), ("s0", 2), ("s5", 2)],
        queries=["q0", "q1", "q0"],
    )
    expected = model(support, masks, query)
    model.feature_cache = FeatureCache(CacheConfig())
    torch.testing.assert_close(model(support, masks, query, keys), expected, rtol=1e-4, atol=1e-4)
    image, memory = model.feature_cache.stats["image"], model.feature_cache.stats["memory"]
    assert (memory.lookups, memory.computed) == (6, 5)
    assert (image.lookups, image.computed) == (5 + 3, 4 + 2)  # supports of the computed memories, then queries
    torch.testing.assert_close(model(support, masks, query, keys), expected, rtol=1e-4, atol=1e-4)
    assert (memory.computed, image.computed, image.lookups) == (5, 6, 11)  # only the queries were asked for
    with pytest.raises(Exception, match="EpisodeKeys has 6 support, 6 memory and 2 query keys for B=3, K=2"):
        model(support, masks, query, EpisodeKeys(keys.supports, keys.memories, keys.queries[:2]))


@torch.inference_mode()
def test_merged_lora_gives_the_same_logits_and_unmerges_exactly(tiny_sam2):
    model = FewShotSAM2(tiny_sam2, LoRAConfig())
    for layer in lora_layers(model).values():  # trained-looking adapters, so the delta is not zero
        torch.nn.init.normal_(layer.lora_B, std=0.02)
    model.eval()
    inputs = make_episode(batch=2, shot=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    storage = {k: v.data_ptr() for k, v in model.state_dict().items()}
    expected = model(*inputs)
    assert merge_lora_(model) == len(model.lora_layers) and merge_lora_(model) == 0  # idempotent
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert sorted(changed) == sorted(f"sam2.{k}" for k in unmerged_weights(model.sam2))
    torch.testing.assert_close(model(*inputs), expected, rtol=1e-4, atol=1e-4)
    unmerge_lora_(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.data_ptr() == storage[k], k
    assert not unmerged_weights(model)


def test_checkpoint_saved_while_merged_holds_the_base_weights():
    module = FSSAM2Module(sam2_config="fssam2_tiny", sam2_checkpoint="random", image_size=64)
    for layer in lora_layers(module.model).values():
        torch.nn.init.normal_(layer.lora_B, std=0.02)
    base = {k: v.clone() for k, v in module.state_dict().items()}
    merge_lora_(module.model)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"].keys() == base.keys()
    for k, v in checkpoint["state_dict"].items():
        assert torch.equal(v, base[k]), k


@pytest.mark.slow
def test_cli_test_with_and_without_cache_and_merge_agree(tmp_path, caplog):
    def test(name, *options):
        cli = run_cli(["test", "--config", str(TESTS / "configs" / "tiny.yaml"),
                       "--trainer.default_root_dir", str(tmp_path / name), "--data.init_args.shot", "2", *options])  # fmt: skip
        return {k: float(v) for k, v in cli.trainer.callback_metrics.items()}

    plain = test("plain", "--model.feature_cache", "null", "--model.merge_lora", "false")
    assert "feature cache" not in caplog.text and "test/encoder_passes" not in plain
    # Unplanned (index order, least recently used) and small: evictions happen. The planned order
    # is tested in test_plan.py.
    # The support gap off: its swapped episodes would add memory lookups beyond the 25 episodes' 50.
    lru = (
        "--data.init_args.eval_order",
        "index",
        "--model.feature_cache.max_megabytes",
        "0.02",
        "--data.init_args.gap_episodes",
        "0",
    )
    fast = test("fast", *lru)
    assert "test feature cache: " in caplog.text
    spill = test("spill", *lru, "--model.feature_cache.spill_dir", str(tmp_path / "features"))
    for run in (fast, spill):
        assert run["test/miou"] == pytest.approx(plain["test/miou"], abs=1e-4)
        assert run["test/fbiou"] == pytest.approx(plain["test/fbiou"], abs=1e-4)
    # 25 episodes x (2 supports + 1 query); the 60-image test pool bounds the passes when nothing is lost
    assert spill["test/encoder_passes"] <= 60 and spill["test/encoder_passes"] < fast["test/encoder_passes"]
    assert spill["test/memory_encoder_passes"] < fast["test/memory_encoder_passes"] <= 50
    assert list((tmp_path / "features").iterdir()) == []  # the spill folder is removed at the end


@pytest.mark.slow
def test_compiled_model_gives_the_same_results(tmp_path):
    # The eager backend exercises the torch.compile wiring and graph capture in seconds; the
    # default (inductor) backend generates code for minutes on a CPU.
    def test(name, *options):
        cli = run_cli(["test", "--config", str(TESTS / "configs" / "tiny.yaml"), "--data.init_args.test_episodes", "8",
                       "--trainer.default_root_dir", str(tmp_path / name), *options])  # fmt: skip
        return cli, {k: float(v) for k, v in cli.trainer.callback_metrics.items()}

    _, plain = test("plain")
    cli, compiled = test("compiled", "--model.compile", "eager")
    assert cli.model.model.sam2.image_encoder._compiled_call_impl is not None
    assert compiled["test/miou"] == pytest.approx(plain["test/miou"], abs=1e-4)
    assert "_orig_mod" not in "".join(cli.model.state_dict())  # checkpoints keep their parameter names
