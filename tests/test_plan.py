"""The evaluation plan (fssam2.plan): every episode once in fixed batches on any number of
processes, Belady's rule in the feature cache, the replay against real runs, the plan report."""

import itertools
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fssam2 import InputError
from fssam2.cache import CacheConfig, FeatureCache, Residency
from fssam2.cli import run_cli
from fssam2.data import SyntheticDataModule, collate_episodes
from fssam2.episodes import EVAL_EPOCH
from fssam2.meters import FLOAT32, HostMemory, Precision, parse_precision, tree_rss
from fssam2.methods.fssam2 import FewShotSAM2
from fssam2.module import FSSAM2Module
from fssam2.plan import MIN_UNIT_BATCHES, PlanSampler, Shown, build_plan, index_batches, trace
from fssam2.plan_report import entry_bytes, report, simulate
from helpers import TESTS

TINY = str(TESTS / "configs" / "tiny.yaml")


def random_episodes(n: int, classes: list[int], pool: int, shot: int, seed: int) -> list[Shown]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        c = rng.choice(classes)
        images = [f"{c}_{j}" for j in range(pool)]
        query, *supports = rng.sample(images, shot + 1)
        out.append(Shown(i, query, c, tuple(supports), c))
    return out


@pytest.mark.parametrize("classes", [[1, 2, 3, 4, 5], [7], list(range(1, 41))])
def test_every_episode_runs_once_in_the_same_batches_on_any_number_of_processes(classes):
    episodes = random_episodes(203, classes, pool=30, shot=2, seed=len(classes))
    plan = build_plan(episodes, batch_size=4)
    assert sorted(i for batch in plan.batches for i in batch) == list(range(203))
    assert all(len(batch) <= 4 for batch in plan.batches)
    assert [p for unit in plan.units for p in unit] == list(range(len(plan.batches)))
    for batch in plan.batches:  # a batch holds consecutive episodes of its unit: one class, or small ones merged
        assert len({episodes[i].class_id for i in batch}) == 1 or len(classes) > 5
    for world in (1, 2, 3, 4):
        shards = [plan.shard(rank, world) for rank in range(world)]
        assert sorted(p for shard in shards for p in shard) == list(range(len(plan.batches)))  # each batch once
        assert all(shard == sorted(shard) and shard for shard in shards)  # plan order, none idle
        # Batches go whole: the same episode tuples for any world size.
        runs = [[plan.batches[p] for p in shard] for shard in shards]
        assert sorted(b for run in runs for b in run) == sorted(plan.batches)
        samplers = [PlanSampler(plan, rank, world) for rank in range(world)]
        assert sorted(tuple(i for i, _ in b) for s in samplers for b in s) == sorted(plan.batches)
        assert all(epoch == EVAL_EPOCH for s in samplers for b in s for _, epoch in b)
    with pytest.raises(InputError, match="fewer than the"):
        plan.shard(0, len(plan.batches) + 1)


def test_processes_get_whole_classes_and_about_the_floor_together():
    episodes = random_episodes(400, [1, 2, 3, 4, 5, 6], pool=40, shot=5, seed=1)
    plan = build_plan(episodes, batch_size=8)
    floor = len({e.query for e in episodes} | {s for e in episodes for s in e.supports})
    for world in (1, 2, 3):
        parts = [plan.rank_batches(r, world) for r in range(world)]
        classes = [{e.class_id for batch in part for e in batch} for part in parts]
        assert sum(len(c) for c in classes) == 6  # no class on two processes
        passes = sum(simulate(part, 16, 1, 2**40).passes for part in parts)
        assert passes == floor  # classes share no image here: the floor exactly
        unplanned = sum(
            simulate(index_batches(episodes, 8, r, world), 16, 1, 2**40, False).passes for r in range(world)
        )
        assert unplanned > 1.5 * floor or world == 1  # round robin: every process meets most images
    small = build_plan(random_episodes(100, list(range(1, 51)), pool=12, shot=1, seed=2), batch_size=4)
    assert all(len(u) >= MIN_UNIT_BATCHES for u in small.units[:-1])  # 2-episode classes merged into units


def test_trace_asks_for_a_support_image_only_where_its_memory_is_new():
    batches = [
        [Shown(0, "q", 1, ("s", "t"), 1)],
        [Shown(1, "s", 1, ("t", "q"), 1)],  # s now a query; t's memory is held
        [Shown(2, "q", 2, ("s",), 2)],  # s under another class: a new memory, its image again
    ]
    assert trace(batches, "test", 64) == {
        ("image", ("test", "q", 64)): [0, 1, 2],
        ("image", ("test", "s", 64)): [0, 1, 2],
        ("image", ("test", "t", 64)): [0],
        ("memory", (("test", "s", 64), 1)): [0],
        ("memory", (("test", "t", 64), 1)): [0, 1],
        ("memory", (("test", "q", 64), 1)): [1],
        ("memory", (("test", "s", 64), 2)): [2],
    }


def replay(requests: list[str], capacity: int, planned: bool) -> int:
    """Misses of one-key-a-step requests through a Residency of `capacity` unit-size entries."""
    residency = Residency(capacity)
    if planned:
        uses: dict = {}
        for step, key in enumerate(requests):
            uses.setdefault(key, []).append(step)
        residency.plan(uses)
    misses = 0
    for step, key in enumerate(requests):
        residency.clock = step
        if not residency.touch(key):
            misses += 1
            residency.admit(key, 1)
        assert residency.nbytes <= capacity
    return misses


def optimum(requests: list[str], capacity: int) -> int:
    """The fewest misses any eviction choice gets (keeping a fetched key is optional)."""
    states = {frozenset(): 0}
    for key in requests:
        nxt: dict = {}
        for held, misses in states.items():
            if key in held:
                options = [(held, misses)]
            else:
                options = [(held, misses + 1)]  # not kept
                for drop in [None, *held]:
                    kept = (held - {drop}) | {key}
                    if len(kept) <= capacity:
                        options.append((frozenset(kept), misses + 1))
            for state, m in options:
                nxt[state] = min(m, nxt.get(state, math.inf))
        states = nxt
    return min(states.values())


def test_belady_is_optimal_on_small_traces_and_never_worse_than_lru():
    rng = random.Random(0)
    for _ in range(300):
        keys = "abcdef"[: rng.randint(2, 6)]
        requests = [rng.choice(keys) for _ in range(rng.randint(1, 12))]
        capacity = rng.randint(1, 3)
        assert replay(requests, capacity, planned=True) == optimum(requests, capacity), (requests, capacity)
    for _ in range(100):
        requests = [rng.choice("abcdefghijklmnop") for _ in range(200)]
        capacity = rng.randint(1, 10)
        assert replay(requests, capacity, planned=True) <= replay(requests, capacity, planned=False)


def test_planned_cache_keeps_nothing_that_is_not_used_again():
    cache = FeatureCache(CacheConfig(max_megabytes=1))
    cache.plan({("image", "a"): [0, 2], ("image", "b"): [0]})
    compute = lambda positions: [(torch.zeros(1000),) for _ in positions]  # noqa: E731
    cache.fetch("image", ["a", "b"], compute)
    assert ("image", "a") in cache and ("image", "b") not in cache  # b has no later use
    cache.clock = 2
    cache.fetch("image", ["a"], lambda positions: pytest.fail("a is held"))
    assert cache.stats["image"].computed == 2 and cache.peak_bytes == 4000


def test_planned_cache_finds_what_a_step_started_with_through_every_lookup_of_the_step(tmp_path):
    """With a spill folder: an entry held when a step starts, in memory or on disk, is found by every
    lookup of that step (a lean evaluation ships no pixels for it: a miss would encode blank pixels).
    Reading one back pushes out nothing the step asks for, and one not taken back stays on disk."""
    compute = lambda positions: [(torch.full((2**17,), 1.0),) for _ in positions]  # noqa: E731 - 0.5 MB each
    for uses_of_b, step, lookups in (([0, 1, 2], 1, ["b", "a"]), ([0, 2], 2, ["b", "b"])):
        cache = FeatureCache(CacheConfig(max_megabytes=0.75, spill_dir=str(tmp_path)))
        cache.plan({("image", "a"): [0, 1], ("image", "b"): uses_of_b})
        cache.fetch("image", ["a", "b"], compute)  # a is held, b (needed later than a) spills
        assert ("image", "a") in cache.residency and ("image", "b") in cache
        cache.clock = step
        # At step 1 reading b back must not push out a; at step 2 (b's last use) b is shown twice.
        assert None not in cache.lookup("image", lookups), lookups
        assert cache.stats["image"].computed == 2


@pytest.fixture(scope="module")
def tiny_module() -> FSSAM2Module:
    torch.manual_seed(0)
    return FSSAM2Module(sam2_config="fssam2_tiny", sam2_checkpoint="random", image_size=64).eval()


@torch.inference_mode()
def test_planned_cached_logits_equal_unplanned_uncached_and_passes_equal_the_replay(tiny_module):
    """With evictions: the budget holds 2 images' features; a swap control shows other classes'
    supports, so memories of one image under two classes occur."""
    dm = SyntheticDataModule(fold=0, shot=2, num_workers=0, test_episodes=40, image_side=64,
                             pool_sizes=(150, 60, 60), batch_size=4, support_control="swap")  # fmt: skip
    dm.image_size = 64
    dataset, plan = dm.dataset("test"), dm.eval_plan("test")
    model = tiny_module.model
    expected = {}
    for batch in index_batches(plan.episodes, 4):  # the published order, no cache
        items = collate_episodes([dataset[(e.index, EVAL_EPOCH)] for e in batch])
        model.feature_cache = None
        for i, logit in zip(items["index"].tolist(), tiny_module._logits(items, "test")[0], strict=True):
            expected[i] = logit
    image_bytes, memory_bytes = entry_bytes(model, 64)
    batches = plan.rank_batches()
    items = [collate_episodes([dataset[(e.index, EVAL_EPOCH)] for e in batch]) for batch in batches]
    tiny_module._plan_steps = {(batch[0].gap, batch[0].index): step for step, batch in enumerate(batches)}
    floor = len({e.query for e in plan.episodes} | {s for e in plan.episodes for s in e.supports})
    try:
        for images, memories in ((2, 8), (3, 1), (1, 5)):
            todo = dict(expected)
            budget = (images * image_bytes + memories * memory_bytes) / 2**20
            cache = model.feature_cache = FeatureCache(CacheConfig(max_megabytes=budget))
            cache.plan(trace(batches, "test", 64))
            for batch in items:
                for i, logit in zip(batch["index"].tolist(), tiny_module._logits(batch, "test")[0], strict=True):
                    torch.testing.assert_close(logit, todo.pop(i), rtol=0, atol=1e-5)
            assert not todo  # every episode once
            assert {size for (kind, _), size in cache.residency._sizes.items() if kind == "image"} == {image_bytes}
            replayed = simulate(batches, image_bytes, memory_bytes, cache.max_bytes)
            ran = (cache.stats["image"].computed, cache.stats["memory"].computed, cache.peak_bytes)
            assert ran == (replayed.passes, replayed.memory_passes, replayed.peak_bytes), (images, memories)
            lru = simulate(index_batches(plan.episodes, 4), image_bytes, memory_bytes, cache.max_bytes, planned=False)
            assert floor < replayed.passes < lru.passes  # evictions cost passes, fewer than least recently used
            assert cache.stats["image"].evictions > 0
    finally:
        tiny_module._plan_steps, model.feature_cache = {}, None


@torch.inference_mode()
def test_entry_sizes_follow_precision_and_half(tiny_module):
    model = tiny_module.model
    f32 = entry_bytes(model, 128)
    feats = model._encode(torch.zeros(1, 3, 128, 128))
    maps, _ = model.memory_maps(feats, torch.zeros(1, 128, 128))
    assert f32 == (sum(t.numel() * 4 for t in feats.per_image(0)), maps[0].numel() * 4)
    assert f32 == (
        4 * (64 * 8 * 8 + 8 * 32 * 32 + 16 * 16 * 16),
        4 * 32 * 8 * 8,
    )  # hidden 64, conv_s0 8, conv_s1 16, mem 32
    assert entry_bytes(model, 128, half=True) == (f32[0] // 2, f32[1] // 2)
    bf16 = entry_bytes(model, 128, parse_precision("bf16-mixed"))  # SAM2's FPN adds its top-down path in float32
    assert bf16 == (4 * 64 * 8 * 8 + 2 * (8 * 32 * 32 + 16 * 16 * 16), 2 * 32 * 8 * 8)
    # A "-true" precision casts the whole model: every float the cache keeps is in that dtype.
    assert entry_bytes(model, 128, parse_precision("64-true")) == (2 * f32[0], 2 * f32[1])
    assert entry_bytes(model, 128, parse_precision("bf16-true")) == (f32[0] // 2, f32[1] // 2)
    assert entry_bytes(model, 128, parse_precision("64-true"), half=True) == (f32[0] // 2, f32[1] // 2)


def test_one_precision_parser_names_a_bad_value():
    assert parse_precision(None) == parse_precision("32-true") == parse_precision(32) == FLOAT32
    assert parse_precision("bf16-mixed") == Precision(torch.bfloat16, mixed=True)
    assert parse_precision("16-true").weights == torch.float16 and parse_precision("16-mixed").weights is None
    with pytest.raises(InputError, match=r"trainer.precision=bf32 is not a Lightning precision"):
        parse_precision("bf32")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="HostMemory reads Linux's /proc")
def test_host_memory_counts_the_workers_too():
    """A data-loading worker's memory is the host's too: a child holding 200 MB raises the peak by about that."""
    with HostMemory(interval=0.01) as quiet:
        pass
    hold = "b = bytearray(200 * 2**20); import sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()"
    with HostMemory(interval=0.01) as busy:
        child = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        assert tree_rss(child.pid) >= 200 * 2**20 and tree_rss(os.getpid()) >= tree_rss(child.pid)
        child.communicate("")
    assert busy.rise >= 190 * 2**20 and busy.peak - quiet.peak >= 190 * 2**20
    assert tree_rss(2**22 + 12345) == 0  # no such process


def test_half_narrows_float32_only():
    cache = FeatureCache(CacheConfig(half=True))
    entry = (torch.full((10,), 1e5, dtype=torch.bfloat16), torch.ones(10) / 3)  # 1e5: beyond float16's range
    cache.fetch("image", ["a"], lambda positions: [entry])
    (back,) = cache.fetch("image", ["a"], lambda positions: pytest.fail("a is cached"))
    assert torch.equal(back[0], entry[0]) and back[1].dtype == torch.float32
    assert cache.nbytes == 10 * 2 + 10 * 2


def test_plan_only_prints_the_table_and_runs_no_episode(tmp_path, capsys, monkeypatch):
    def no_forward(*args, **kwargs):
        raise AssertionError("plan_only ran the model")

    monkeypatch.setattr(FewShotSAM2, "forward", no_forward)
    run_dir = tmp_path / "run"
    cli = run_cli(["test", "--config", TINY, "--trainer.default_root_dir", str(run_dir),
                   "--data.init_args.shot", "2", "--model.feature_cache.plan_only", "true",
                   "--model.feature_cache.max_megabytes", "0.5", "--trainer.devices", "2"])  # fmt: skip
    out = capsys.readouterr().out
    assert cli.trainer is None and not run_dir.exists()  # nothing ran, nothing written
    dm = SyntheticDataModule(fold=0, shot=2, num_workers=0, test_episodes=25, image_side=64, batch_size=4,
                             pool_sizes=(150, 60, 60))  # fmt: skip
    module = FSSAM2Module(sam2_config="fssam2_tiny", sam2_checkpoint="random", image_size=64)
    sizes = entry_bytes(module.model, 64)
    expected = report(dm.eval_plan("test"), 4, *sizes, int(0.5 * 2**20), world_size=2)
    assert expected.planned.passes < expected.unplanned.passes
    row = (
        f"| 25 | {expected.floor} | {expected.planned.passes} | {expected.planned.passes / expected.floor:.3f} "
        f"| {expected.planned.peak_bytes / 2**20:.4g} | {expected.unplanned.passes} |"
    )
    assert "SyntheticDataModule fold 0, test split, 2-shot, batch 4; fssam2_tiny at 64 px" in out
    assert "budget 0.5 MB; 2 processes" in out
    assert row in out, out


def test_cli_planned_runs_equal_unplanned_and_count_the_replayed_passes(tmp_path):
    def test(name, *options):
        run_cli(["test", "--config", TINY, "--trainer.default_root_dir", str(tmp_path / name),
                 "--data.init_args.shot", "2", *options])  # fmt: skip
        return json.loads((tmp_path / name / "test_metrics.json").read_text())

    budget = "0.05"  # about 3 images' features of the tiny model at 64 px: evictions happen
    uncached = test("uncached", "--data.init_args.eval_order", "index", "--model.feature_cache", "null")
    planned = test("planned", "--model.feature_cache.max_megabytes", budget)
    lru = test("lru", "--data.init_args.eval_order", "index", "--model.feature_cache.max_megabytes", budget)
    for key in ("miou", "fbiou"):
        assert planned[key] == pytest.approx(uncached[key], abs=1e-6)
    assert planned["per_class"] == pytest.approx(uncached["per_class"], abs=1e-6)
    dm = SyntheticDataModule(fold=0, shot=2, num_workers=0, test_episodes=25, image_side=64, batch_size=4,
                             pool_sizes=(150, 60, 60))  # fmt: skip
    module = FSSAM2Module(sam2_config="fssam2_tiny", sam2_checkpoint="random", image_size=64)
    replayed = simulate(dm.eval_plan("test").rank_batches(), *entry_bytes(module.model, 64), int(0.05 * 2**20))
    assert planned["encoder_passes"] == replayed.passes < lru["encoder_passes"]


def test_swapped_supports_are_in_the_plan():
    dm = SyntheticDataModule(fold=0, shot=1, num_workers=0, test_episodes=30, image_side=64,
                             pool_sizes=(150, 60, 60), support_control="swap")  # fmt: skip
    dm.image_size = 64
    plan, dataset = dm.eval_plan("test"), dm.dataset("test")
    for shown in itertools.islice(plan.episodes, 30):
        item = dataset[(shown.index, EVAL_EPOCH)]
        assert (shown.supports, shown.support_class) == (tuple(item["supports"]), item["support_class"])
        assert shown.support_class != shown.class_id


@pytest.mark.slow
@pytest.mark.parametrize("method", ["FSSAM2", "SANSA"])
def test_weak_supports_are_encoded_once_and_the_plan_counts_what_the_run_does(tmp_path, method):
    chosen = ["--model.method", "fssam2.methods.SANSA"] if method == "SANSA" else []

    def test(name, *options):
        run_cli(["test", "--config", TINY, "--trainer.default_root_dir", str(tmp_path / name), *chosen,
                 "--data.init_args.shot", "3", "--data.init_args.test_episodes", "12",
                 "--data.init_args.support_annotation", "mixed", *options])  # fmt: skip
        return json.loads((tmp_path / name / "test_metrics.json").read_text())

    planned, index = test("planned"), test("index", "--data.init_args.eval_order", "index")
    # the prompt decode's features serve the memory step, and later batches' decodes of the same image
    # (supports here are not all queries too: before, 59 passes for 22 images)
    assert planned["encoder_passes"] == planned["distinct_images"] == index["encoder_passes"]
    small = test("small", "--model.feature_cache.max_megabytes", "0.05")  # evictions happen
    dm = SyntheticDataModule(fold=0, shot=3, num_workers=0, test_episodes=12, image_side=64, batch_size=4,
                             pool_sizes=(150, 60, 60), support_annotation="mixed")  # fmt: skip
    dm.image_size = 64
    kind = {"method": "fssam2.methods.SANSA"} if method == "SANSA" else {}
    module = FSSAM2Module(sam2_config="fssam2_tiny", sam2_checkpoint="random", image_size=64, **kind)
    replayed = simulate(dm.eval_plan("test").rank_batches(), *entry_bytes(module.model, 64), int(0.05 * 2**20))
    assert (small["encoder_passes"], small["memory_encoder_passes"]) == (replayed.passes, replayed.memory_passes)
    assert planned["encoder_passes"] < small["encoder_passes"]
    assert {k: small[k] for k in ("miou", "fbiou", "per_class")} == {
        k: planned[k] for k in ("miou", "fbiou", "per_class")
    }
