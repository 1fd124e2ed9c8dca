"""The episode protocol against an independent implementation of DESIGN.md's rule, and sharding."""

import numpy as np
import pytest

from fssam2 import InputError
from fssam2.episodes import EpisodeSampler, QueryCycleEpisodes


@pytest.fixture
def toy_split():
    rng = np.random.default_rng(7)
    images = [f"img_{i:03d}" for i in range(40)]
    present = {im: sorted(rng.choice(np.arange(1, 8), rng.integers(1, 4), replace=False).tolist()) for im in images}
    classes = [2, 3, 4, 5]
    images = [im for im in images if set(present[im]) & set(classes)]
    by_class = {c: [im for im in images if c in present[im]] for c in classes}
    return images, by_class, present, classes


def published_rule(images, by_class, present, classes, shot, seed, idx, epoch):
    """DESIGN.md, PASCAL-5i, written out independently: 0-based classes, key c + 1."""
    rng = np.random.default_rng((seed, idx, epoch + 1))
    query = images[idx % len(images)]
    zero_based = [c - 1 for c in classes]
    found = sorted({v - 1 for v in present[query]} & set(zero_based))
    c = rng.choice(found)
    supports = rng.choice([x for x in by_class[c + 1] if x != query], shot, replace=False)
    return query, int(c) + 1, [str(s) for s in supports]


@pytest.mark.parametrize("shot", [1, 5])
@pytest.mark.parametrize("epoch", [-1, 0, 3])
def test_matches_the_published_rule(toy_split, shot, epoch):
    images, by_class, present, classes = toy_split
    episodes = QueryCycleEpisodes(images, by_class, present, classes, shot, seed=42, length=100)
    for idx in range(100):
        ep = episodes.episode(idx, epoch)
        assert (ep.query, ep.class_id, list(ep.supports)) == published_rule(
            images, by_class, present, classes, shot, 42, idx, epoch
        )
        assert ep.query not in ep.supports and len(set(ep.supports)) == shot
        assert ep.class_id in present[ep.query]


def test_epoch_and_seed_change_the_episodes(toy_split):
    episodes = QueryCycleEpisodes(*toy_split, shot=1, seed=42, length=50)
    other_seed = QueryCycleEpisodes(*toy_split, shot=1, seed=43, length=50)
    a = [episodes.episode(i, -1) for i in range(50)]
    assert a != [episodes.episode(i, 0) for i in range(50)]
    assert a != [other_seed.episode(i, -1) for i in range(50)]
    assert a == [episodes.episode(i, -1) for i in range(50)]


def test_class_with_too_few_images_is_refused(toy_split):
    images, by_class, present, classes = toy_split
    by_class = {**by_class, 5: by_class[5][:2]}
    with pytest.raises(InputError, match=r"Classes \[5\] have fewer than shot \+ 1 = 3 images"):
        QueryCycleEpisodes(images, by_class, present, classes, shot=2, seed=0)


def test_zero_shot_is_refused(toy_split):
    with pytest.raises(InputError, match=r"data.shot=0"):
        QueryCycleEpisodes(*toy_split, shot=0, seed=0)


@pytest.mark.parametrize("length,world", [(10, 1), (10, 3), (7, 2), (1, 4)])
def test_evaluation_shards_run_every_episode_exactly_once(length, world):
    seen = []
    for rank in range(world):
        sampler = EpisodeSampler(length, shuffle=False, seed=0, rank=rank, world_size=world)
        pairs = list(sampler)
        assert len(pairs) == len(sampler)
        assert all(epoch == -1 for _, epoch in pairs)
        seen += [i for i, _ in pairs]
    assert sorted(seen) == list(range(length))


def test_training_shards_are_disjoint_equal_and_reshuffled_per_epoch():
    samplers = [EpisodeSampler(11, shuffle=True, seed=5, rank=r, world_size=2) for r in range(2)]
    for s in samplers:
        s.set_epoch(3)
    shards = [list(s) for s in samplers]
    assert len(shards[0]) == len(shards[1]) == 5
    assert not {i for i, _ in shards[0]} & {i for i, _ in shards[1]}
    assert all(e == 3 for shard in shards for _, e in shard)
    samplers[0].set_epoch(4)
    assert [i for i, _ in samplers[0]] != [i for i, _ in shards[0]]


def test_the_pascal_held_out_rule_has_one_home():
    from fssam2.benchmarks import PascalDataModule
    from fssam2.episodes import pascal_classes
    from fssam2.prepare import pascal_held_out

    for fold in (0, 1, 2, 3):
        held, trained = pascal_classes("test", fold), pascal_classes("train", fold)
        assert held == list(range(5 * fold + 1, 5 * fold + 6)) and sorted(held + trained) == list(range(1, 21))
        assert PascalDataModule(fold=fold).class_ids("test") == held == pascal_held_out(fold)
        assert PascalDataModule(fold=fold).class_ids("train") == trained
    assert pascal_held_out(10) == pascal_classes("test", 10) == [1, 4, 9, 11, 12, 15]
