"""The objectness oracle against an independent per-episode numpy computation."""

import numpy as np
import pytest

from fssam2 import InputError
from fssam2.benchmarks import FolderDataModule
from fssam2.data import SyntheticDataModule
from fssam2.episodes import EpisodeSampler
from fssam2.oracle import objectness_oracle

SMALL = {"image_side": 64, "pool_sizes": (150, 60, 60), "test_episodes": 50, "num_workers": 0, "image_cache_mb": 0}


@pytest.fixture(scope="module")
def dm():
    dm = SyntheticDataModule(**SMALL)
    dm.image_size = 64
    return dm


def reference(dm, read):
    """Per-class sums from the test run's own items (EpisodeDataset at the evaluation epoch), with
    the prediction "label value in 1..254" and the metric written out in numpy."""
    dataset = dm.dataset("test")
    classes = dm.class_ids("test")
    sums = {c: np.zeros(4, np.int64) for c in classes}  # I_fg, U_fg, I_bg, U_bg
    single = {}  # episode index -> class, for queries holding one object
    for key in EpisodeSampler(len(dataset), shuffle=False, seed=dm.split_seed("test")):
        item = dataset[key]
        _, label = read(item["query"])
        target = item["query_target"].numpy()
        valid = target != 255
        pred = (label >= 1) & (label <= 254)
        fg, bg = target == 1, target == 0
        sums[item["class_id"]] += [
            (pred & fg & valid).sum(),
            ((pred | fg) & valid).sum(),
            (~pred & bg & valid).sum(),
            ((~pred | bg) & valid).sum(),
        ]
        if len(set(np.unique(label).tolist()) - {0, 255}) == 1:
            single[item["index"]] = item["class_id"]
    s = np.stack([sums[c] for c in classes]).astype(float)
    per_class = 100 * s[:, 0] / np.maximum(s[:, 1], 1)
    fbiou = 100 * (s[:, 0].sum() / s[:, 1].sum() + s[:, 2].sum() / s[:, 3].sum()) / 2
    return per_class, fbiou, single


def test_oracle_matches_numpy_and_stays_below_100(dm):
    result = objectness_oracle(dm, "test")
    per_class, fbiou, _ = reference(dm, dm.benchmark.read)
    assert result["episodes"] == 50
    assert list(result["per_class"]) == [str(c) for c in dm.class_ids("test")]
    np.testing.assert_allclose(list(result["per_class"].values()), per_class, atol=1e-4)
    assert result["miou"] == pytest.approx(per_class.mean(), abs=1e-4)
    assert result["fbiou"] == pytest.approx(fbiou, abs=1e-4)
    # Queries show 2-3 objects of distinct classes: predicting all of them is no few-shot answer.
    assert 0 < result["miou"] < 100 and all(v < 100 for v in result["per_class"].values())


class OneObject(SyntheticDataModule):
    """The same episodes, but each query's label map keeps only the object of its episode's class."""

    def image_reader(self, split):
        read, wanted = super().image_reader(split), {}
        rule = self.episodes(split)
        for i in range(len(rule)):
            episode = rule.episode(i)
            assert wanted.setdefault(episode.query, episode.class_id) == episode.class_id  # one class per query

        def one_object(image_id):
            image, label = read(image_id)
            if image_id in wanted:
                label = np.where((label == wanted[image_id]) | (label == 255), label, 0).astype(np.uint8)
            return image, label

        return one_object


def test_oracle_is_perfect_on_one_object_queries():
    dm = OneObject(**SMALL)
    dm.image_size = 64
    result = objectness_oracle(dm, "test")
    _, _, single = reference(dm, dm.image_reader("test"))
    assert len(single) == 50  # every query now holds one object: the episode's class
    scored = {str(c) for c in single.values()}
    assert scored == {str(c) for c in dm.class_ids("test")}
    assert all(result["per_class"][c] == pytest.approx(100) for c in scored)
    assert result["miou"] == pytest.approx(100) and result["fbiou"] == pytest.approx(100)


def test_binary_mask_datasets_and_training_split_are_refused(dm, tmp_path):
    with pytest.raises(InputError, match="FolderDataModule gives one binary mask per image.*synthetic, PASCAL-5i"):
        objectness_oracle(FolderDataModule(root=str(tmp_path)))
    with pytest.raises(InputError, match="split='train'"):
        objectness_oracle(dm, "train")
