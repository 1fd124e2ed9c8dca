"""The synthetic benchmark's lists and the episodic dataset's tensors."""

import cv2
import numpy as np
import pytest
import torch

from fssam2 import InputError
from fssam2.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SyntheticDataModule,
    binary_target,
    collate_episodes,
    normalise,
    resize_image,
    to_input,
)
from fssam2.synthetic import BOUNDARY, SyntheticBenchmark

SMALL = {"pool_sizes": (150, 60, 60)}


@pytest.fixture(scope="module")
def datamodule():
    dm = SyntheticDataModule(fold=1, shot=2, batch_size=3, num_workers=0, test_episodes=20, val_episodes=10, **SMALL)
    dm.image_size = 64
    return dm


def test_lists_follow_the_construction_rule(datamodule):
    bench, fold = datamodule.benchmark, datamodule.fold
    held_out = set(bench.fold_classes(fold))
    assert held_out == {6, 7, 8, 9, 10}
    train, by_class = bench.lists("train", fold)
    for image_id in train:
        _, label = bench.render(*bench.parse_id(image_id))
        assert not held_out & set(np.unique(label).tolist())  # no held-out pixel at all
    for c, ids in by_class.items():
        assert c not in held_out
        for image_id in ids[:5]:
            _, label = bench.render(*bench.parse_id(image_id))
            assert (label == c).sum() >= bench.min_pixels
    test, test_by_class = bench.lists("test", fold)
    assert set(test_by_class) == held_out and all(test_by_class.values())
    assert set(test) == set().union(*test_by_class.values())


def test_rendering_is_deterministic_and_labelled():
    bench = SyntheticBenchmark(pool_sizes=(5, 5, 5))
    image, label = bench.render("test", 3)
    again, label_again = bench.render("test", 3)
    assert image.dtype == np.uint8 and image.shape == (128, 128, 3)
    assert np.array_equal(image, again) and np.array_equal(label, label_again)
    values = set(np.unique(label).tolist())
    assert 0 in values and BOUNDARY in values and len(values - {0, BOUNDARY}) >= 1
    assert not np.array_equal(image, bench.render("val", 3)[0])


def test_binary_target_keeps_the_ignore_region():
    label = np.array([[0, 3, 255], [5, 3, 0]], np.uint8)
    assert binary_target(label, 3).tolist() == [[0, 1, 255], [0, 1, 0]]


def test_items_shapes_and_values(datamodule):
    dataset = datamodule.dataset("test")
    item = dataset[(4, -1)]
    assert item["support_images"].shape == (2, 3, 64, 64)
    assert item["support_masks"].shape == (2, 64, 64)
    assert set(item["support_masks"].unique().tolist()) <= {0.0, 1.0}
    assert item["support_masks"].sum() > 0
    assert item["query_image"].shape == (3, 64, 64)
    assert item["query_target"].shape == (128, 128)  # the original size, for scoring
    assert set(item["query_mask"].unique().tolist()) <= {0, 1, 255}
    episode = dataset.episodes.episode(4)
    _, label = datamodule.image_reader("test")(episode.query)
    assert torch.equal(item["query_target"], torch.from_numpy(binary_target(label, episode.class_id)).long())
    batch = collate_episodes([dataset[(i, -1)] for i in range(3)])
    assert batch["support_images"].shape == (3, 2, 3, 64, 64)
    assert isinstance(batch["query_target"], list) and len(batch["query_target"]) == 3


def test_workers_receive_a_picklable_dataset_without_the_datamodule(datamodule):
    import pickle

    dataset = pickle.loads(pickle.dumps(datamodule.dataset("val")))
    assert not any(isinstance(v, SyntheticDataModule) for v in vars(dataset).values())
    assert torch.equal(dataset[(2, -1)]["query_image"], datamodule.dataset("val")[(2, -1)]["query_image"])


def test_training_items_are_augmented_reproducibly(datamodule):
    dataset = datamodule.dataset("train")
    a, b = dataset[(5, 2)], dataset[(5, 2)]
    for key in ("support_images", "support_masks", "query_image", "query_mask"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["query_image"], dataset[(5, 3)]["query_image"])


def test_bad_options_are_refused():
    with pytest.raises(InputError, match="data.shot=0"):
        SyntheticDataModule(shot=0)
    with pytest.raises(InputError, match=r"data.fold=4 is out of range: use 0..3"):
        SyntheticDataModule(fold=4)


def test_decoded_image_cache_gives_the_same_items_with_fewer_reads():
    def items(image_cache_mb):
        dm = SyntheticDataModule(
            fold=1, shot=2, num_workers=0, test_episodes=30, image_cache_mb=image_cache_mb, **SMALL
        )
        dm.image_size = 64
        dataset = dm.dataset("test")
        reads = []
        read = dataset.read
        dataset.read = lambda image_id: reads.append(image_id) or read(image_id)
        return [dataset[(i, -1)] for i in range(30)], reads

    plain, plain_reads = items(0)
    cached, cached_reads = items(64)
    assert len(plain_reads) == 90 and len(cached_reads) == len(set(plain_reads)) < 60
    for a, b in zip(plain, cached, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            same = torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]
            assert same, key


def test_loading_an_episode_without_an_image_size_is_one_clear_error():
    # Listing episodes needs no input size (the plan report); loading one does.
    dm = SyntheticDataModule(fold=1, shot=1, num_workers=0, test_episodes=4, **SMALL)
    dataset = dm.dataset("test")
    assert len(dataset) == 4
    with pytest.raises(InputError, match="image_size is unset"):
        dataset[(0, -1)]


def test_batches_carry_uint8_images_and_normalising_on_the_device_equals_the_host_path():
    """Images travel as uint8 at the input size (a quarter of float32's bytes); the module's
    normalisation gives bit for bit the float32 input the host used to make."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    resized = resize_image(image, 64)
    assert resized.dtype == torch.uint8 and resized.shape == (3, 64, 64)
    host = cv2.resize(image, (64, 64), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    reference = torch.from_numpy((host - IMAGENET_MEAN) / IMAGENET_STD).permute(2, 0, 1)
    assert torch.equal(normalise(resized), reference) and torch.equal(to_input(image, 64), reference)
    dm = SyntheticDataModule(fold=0, shot=2, num_workers=0, image_side=64, pool_sizes=(150, 60, 60), batch_size=3)
    dm.image_size = 64
    batch = next(iter(dm.test_dataloader()))
    assert batch["support_images"].dtype == batch["query_image"].dtype == torch.uint8
    assert batch["support_images"].element_size() * batch["support_images"][0, 0].numel() == 3 * 64 * 64
