"""Support controls (`data.support_control`): swap and blank change the supports of evaluation
episodes, nothing else, and cached evaluation stays exact under them."""

import json
from collections import defaultdict

import lightning as L
import numpy as np
import pytest
import torch
import wandb

from fssam2 import InputError
from fssam2.cache import CacheConfig, FeatureCache
from fssam2.cli import run_cli
from fssam2.data import EpisodeDataset, SyntheticDataModule, collate_episodes, normalise
from fssam2.episodes import ClassFirstEpisodes, FolderEpisodes, QueryCycleEpisodes
from fssam2.methods.fssam2 import EpisodeKeys
from fssam2.module import FSSAM2Module
from helpers import TESTS

TINY = str(TESTS / "configs" / "tiny.yaml")
SMALL = {"pool_sizes": (150, 60, 60)}
EPISODES = 120
QUERY_FIELDS = ("query_image", "query_mask", "query_target", "class_id", "index", "query")


def datamodule(control: str, **kwargs) -> SyntheticDataModule:
    options = {"fold": 0, "shot": 1, "num_workers": 0, "test_episodes": EPISODES, "image_side": 64, **SMALL}
    dm = SyntheticDataModule(**{**options, **kwargs}, support_control=control)
    dm.image_size = 64
    return dm


def same(a, b) -> bool:
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


@pytest.fixture(scope="module")
def items() -> dict[str, list[dict]]:
    """The test split's items under each control, 2-shot."""
    datasets = {control: datamodule(control, shot=2).dataset("test") for control in ("none", "swap", "blank")}
    return {control: [dataset[(i, -1)] for i in range(EPISODES)] for control, dataset in datasets.items()}


def test_swap_shows_another_class_s_supports_and_keeps_the_query(items):
    dataset = datamodule("swap", shot=2).dataset("test")
    donors = set()
    for true, swapped in zip(items["none"], items["swap"], strict=True):
        for key in QUERY_FIELDS:
            assert same(true[key], swapped[key]), key
        donor = dataset.donor(true["index"], -1)
        donors.add(donor.index)
        assert swapped["support_class"] == donor.class_id != true["class_id"]  # never the episode's class
        assert true["query"] not in swapped["supports"]
        # The donor's own supports, images and masks of the donor's class, exactly.
        shown = items["none"][donor.index]
        assert swapped["supports"] == shown["supports"] == donor.supports
        assert torch.equal(swapped["support_images"], shown["support_images"])
        assert torch.equal(swapped["support_masks"], shown["support_masks"])
        assert (swapped["support_masks"].flatten(1).sum(1) > 0).all()  # no empty donor mask
    assert len(donors) > EPISODES // 2  # many different donors, not one episode shown everywhere


def test_blank_shows_the_true_support_images_with_empty_masks(items):
    for true, blank in zip(items["none"], items["blank"], strict=True):
        for key in (*QUERY_FIELDS, "supports", "support_images"):
            assert same(true[key], blank[key]), key
        assert true["support_masks"].sum() > 0 and blank["support_masks"].shape == true["support_masks"].shape
        assert blank["support_masks"].sum() == 0 and blank["support_class"] == 0
        assert true["support_class"] == true["class_id"]


def test_swap_is_a_function_of_the_episode_index(items):
    again = datamodule("swap", shot=2).dataset("test")
    for i in (0, 7, EPISODES - 1):  # the last one's donor wraps around to the start
        item = again[(i, -1)]
        for key, value in items["swap"][i].items():
            assert same(value, item[key]), key


def test_training_episodes_are_never_altered():
    true, swap, blank = (datamodule(c).dataset("train")[(3, 1)] for c in ("none", "swap", "blank"))
    assert swap["supports"] == true["supports"] and swap["support_class"] == true["class_id"]
    assert torch.equal(swap["support_masks"], true["support_masks"]) and blank["support_masks"].sum() > 0
    assert datamodule("swap").dataset("val").support_control == "swap"  # validation is evaluation


def test_fit_refuses_a_control_rather_than_pick_checkpoints_on_controlled_episodes():
    dm = datamodule("swap")
    with pytest.raises(InputError, match="support_control=swap is for evaluation runs"):
        dm.setup("fit")
    dm.setup("test")  # evaluation stages take it
    datamodule("none").setup("fit")


@pytest.mark.parametrize(
    "rule",
    [
        FolderEpisodes({"cat": ["1", "2", "3", "4"], "dog": ["1", "2", "3"], "owl": ["1", "2"]}, shot=1, seed=0),
        ClassFirstEpisodes(
            {1: ["a", "b", "c"], 2: ["a", "d", "e"], 3: ["f", "g"]}, [1, 2, 3], shot=1, seed=0, length=40
        ),
    ],
    ids=["fss1000", "coco"],
)
def test_swap_works_for_every_episode_rule(rule):
    dataset = EpisodeDataset(rule, read=None, image_size=64, augment=False, support_control="swap")
    for i in range(len(rule)):
        episode, donor = rule.episode(i), dataset.donor(i, -1)
        assert donor.class_id != episode.class_id and episode.query not in donor.supports
        assert donor == dataset.donor(i, -1)


def test_swap_without_a_second_class_and_bad_values_are_refused():
    one_class = QueryCycleEpisodes(["a", "b", "c"], {1: ["a", "b", "c"]}, lambda _: [1], [1], shot=1, seed=0)
    with pytest.raises(InputError, match=r"support_control=swap needs >= 2 classes"):
        EpisodeDataset(one_class, read=None, image_size=64, augment=False, support_control="swap")
    # Two classes listed, but every episode is of class 1: no donor.
    never_two = QueryCycleEpisodes(["a", "b", "c"], {1: ["a", "b", "c"], 2: ["d", "e"]}, lambda _: [1], [1, 2], 1, 0)
    dataset = EpisodeDataset(never_two, read=None, image_size=64, augment=False, support_control="swap")
    with pytest.raises(InputError, match=r"swap needs >= 2 classes"):
        dataset.donor(0, -1)
    with pytest.raises(InputError, match=r"data.support_control='shuffle' is not one of none, swap, blank"):
        datamodule("shuffle")


def _colliding_swap_batch() -> dict:
    """Two swapped episodes of the same class showing one support image under two donor classes:
    a support memory keyed by the query's class would be one key for two different masks."""
    dataset = datamodule("swap").dataset("test")
    first: dict[tuple[str, int], tuple[int, int]] = {}
    for i in range(EPISODES):
        episode, donor = dataset.episodes.episode(i), dataset.donor(i, -1)
        for s in donor.supports:
            seen = first.setdefault((s, episode.class_id), (i, donor.class_id))
            if seen[1] != donor.class_id:
                return collate_episodes([dataset[(seen[0], -1)], dataset[(i, -1)]])
    pytest.fail(f"no two swapped episodes among {EPISODES} share a support image under different donor classes")


@pytest.fixture(scope="module")
def tiny_module() -> FSSAM2Module:
    torch.manual_seed(0)
    return FSSAM2Module(sam2_config="fssam2_tiny", sam2_checkpoint="random", image_size=64).eval()


def _logits(module: FSSAM2Module, batch: dict, cache: FeatureCache | None) -> torch.Tensor:
    module.model.feature_cache = cache
    return module._logits(batch, "test")[0]


# Cached and uncached logits agree to float rounding (here exactly); a memory computed from
# another mask moves the tiny random model's logits by ~1e-3 (they are ~3e-2 in size).
EXACT = {"rtol": 0.0, "atol": 1e-6}


@torch.inference_mode()
def test_cached_swap_keys_support_memories_by_the_donor_class(tiny_module):
    batch = _colliding_swap_batch()
    assert batch["class_id"][0] == batch["class_id"][1] and batch["support_class"][0] != batch["support_class"][1]
    uncached = _logits(tiny_module, batch, None)
    torch.testing.assert_close(_logits(tiny_module, batch, FeatureCache(CacheConfig())), uncached, **EXACT)

    # The collision matters: keyed by the query's class, the second episode gets the first's memory.
    size = tiny_module.model.image_size
    supports = [("test", s, size) for episode in batch["supports"] for s in episode]
    by_query_class = EpisodeKeys(
        supports=supports,
        memories=[(key, int(c)) for key, c in zip(supports, batch["class_id"], strict=True)],
        queries=[("test", q, size) for q in batch["query"]],
    )
    tiny_module.model.feature_cache = FeatureCache(CacheConfig())
    images = normalise(batch["support_images"]), normalise(batch["query_image"])
    wrong = tiny_module.model(images[0], batch["support_masks"], images[1], by_query_class)
    assert (wrong[1] - uncached[1]).abs().max() > 100 * EXACT["atol"]


@torch.inference_mode()
def test_cached_blank_masks_get_memories_of_their_own(tiny_module):
    true_batch, blank_batch = (
        collate_episodes([dataset[(i, -1)] for i in range(4)])
        for dataset in (datamodule("none").dataset("test"), datamodule("blank").dataset("test"))
    )
    expected = _logits(tiny_module, blank_batch, None)
    cache = FeatureCache(CacheConfig())  # one cache for both: the true masks' memories come first
    _logits(tiny_module, true_batch, cache)
    torch.testing.assert_close(_logits(tiny_module, blank_batch, cache), expected, **EXACT)
    assert (_logits(tiny_module, true_batch, None) - expected).abs().max() > 100 * EXACT["atol"]


def _test_run(run_dir, control: str, *extra: str) -> dict:
    run_cli(
        [
            "test",
            "--config",
            TINY,
            "--trainer.default_root_dir",
            str(run_dir),
            "--data.init_args.test_episodes",
            "60",
            "--data.init_args.support_control",
            control,
            *extra,
        ]
    )
    return json.loads((run_dir / "test_metrics.json").read_text())


@pytest.mark.slow
def test_cli_records_the_control_and_cached_runs_equal_uncached(tmp_path):
    # The run below shows a support image under two donor classes for one query class, so a
    # cache keyed by the query's class would change its numbers (see the test above).
    dataset = datamodule("swap", test_episodes=60).dataset("test")
    donors = defaultdict(set)
    for i in range(60):
        for s in dataset.donor(i, -1).supports:
            donors[(s, dataset.episodes.episode(i).class_id)].add(dataset.donor(i, -1).class_id)
    assert any(len(classes) > 1 for classes in donors.values())

    true = _test_run(tmp_path / "none", "none")
    assert true["support_control"] == "none"
    for control in ("swap", "blank"):
        cached = _test_run(
            tmp_path / control,
            control,
            "--trainer.logger",
            "lightning.pytorch.loggers.WandbLogger",
            "--trainer.logger.offline",
            "true",
        )
        assert wandb.run.config["support_control"] == control  # the datamodule's hyperparameters reach W&B
        wandb.finish()
        uncached = _test_run(tmp_path / f"{control}_uncached", control, "--model.feature_cache", "null")
        assert cached["support_control"] == uncached["support_control"] == control
        assert cached["encoder_passes"] is not None and uncached["encoder_passes"] is None
        assert cached["miou"] == pytest.approx(uncached["miou"], abs=1e-6)
        assert cached["fbiou"] == pytest.approx(uncached["fbiou"], abs=1e-6)
        assert cached["per_class"] == pytest.approx(uncached["per_class"], abs=1e-6)
        assert cached["miou"] != pytest.approx(true["miou"], abs=1e-6)  # the control changed the supports


def test_cli_refuses_a_bad_control(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(["test", "--config", TINY, "--data.init_args.support_control", "shuffle"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "support_control" in err and "Traceback" not in err


class HollowLabels:
    """A reader whose label maps are all background: every mask comes out empty."""

    def __init__(self, read):
        self.read = read

    def __call__(self, image_id):
        image, label = self.read(image_id)
        return image, np.zeros_like(label)


class HollowData(SyntheticDataModule):
    def image_reader(self, split):
        return HollowLabels(super().image_reader(split))


@pytest.mark.parametrize(("data", "control", "expected"), [(HollowData, "none", 12), (SyntheticDataModule, "blank", 0)])
def test_empty_masks_are_counted_and_reported(tmp_path, data, control, expected):
    dm = data(
        fold=0, shot=1, num_workers=0, test_episodes=12, batch_size=4, image_side=64, support_control=control, **SMALL
    )
    module = FSSAM2Module(sam2_config="fssam2_tiny", sam2_checkpoint="random", image_size=64)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    if expected:
        with pytest.warns(UserWarning, match=f"{expected} episodes had an all-empty support mask and {expected}"):
            result = trainer.test(module, datamodule=dm, verbose=False)[0]
    else:
        result = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert result["test/empty_support_masks"] == expected and result["test/empty_query_targets"] == expected
