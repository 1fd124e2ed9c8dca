"""The real benchmarks: published list files, generated datasets in each on-disk layout, the
episode rules against independent implementations, `fssam2 episodes` / `prepare`, bad input."""

import ast
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fssam2 import InputError, module
from fssam2.benchmarks import (
    CocoDataModule,
    FSS1000DataModule,
    LabelMapReader,
    PascalDataModule,
    fold_lists,
    read_class_file,
    read_data_list,
)
from fssam2.cli import run_cli
from fssam2.episodes import EVAL_EPOCH, ClassFirstEpisodes, FolderEpisodes
from fssam2.metric import score_at_original_size
from fssam2.synthetic import SyntheticBenchmark, write_coco_layout, write_fss_layout, write_pascal_layout
from helpers import SHARED, one_line_error

SPLITS = SHARED / "data" / "splits"
needs_splits = pytest.mark.skipif(
    not SPLITS.is_dir(), reason="the published split lists (../shared/data/splits) are absent"
)
CONFIGS = Path(__file__).parent.parent / "configs"


# the published lists
@needs_splits
def test_published_lists_parse_for_every_fold():
    sizes = {0: 364, 1: 445, 2: 592, 3: 336}
    for fold in (0, 1, 2, 3, 10, 11, 12, 13):
        images, by_class = fold_lists(SPLITS, "pascal", "test", fold)
        assert images and all(set(ids) <= set(images) for ids in by_class.values())
        if fold in sizes:
            assert len(images) == sizes[fold] and sorted(by_class) == list(range(5 * fold + 1, 5 * fold + 6))
            train, train_by_class = fold_lists(SPLITS, "pascal", "train", fold)
            assert len(train) > 2000 and not set(train_by_class) & set(by_class)
    for fold in range(4):
        for split in ("train", "test"):
            images, by_class = fold_lists(SPLITS, "coco", split, fold)
            held_out = {fold + 4 * v + 1 for v in range(20)}
            assert (set(by_class) == held_out) == (split == "test") and images[0].startswith("COCO_")
    assert [len(read_data_list(SPLITS / "fss" / f)) for f in ("trn.txt", "val.txt", "test.txt")] == [520, 240, 240]


def test_class_file_is_parsed_safely(tmp_path):
    path = tmp_path / "sub_class_file_list_0.txt"
    path.write_text("__import__('os').system('echo pwned')")
    with pytest.raises(InputError, match="not a Python dict literal"):
        read_class_file(path)
    path.write_text("{1: 'a'}")
    with pytest.raises(InputError, match="must map class numbers to lists"):
        read_class_file(path)


# independent implementations of DESIGN.md's rules
def pascal_rule(images, by_class, present, classes, shot, seed, idx):
    rng = np.random.default_rng((seed, idx, 0))
    query = images[idx % len(images)]
    found = sorted(c for c in range(20) if c + 1 in present(query) and c + 1 in classes)
    c = rng.choice(found)
    supports = rng.choice([x for x in by_class[c + 1] if x != query], shot, replace=False)
    return {"index": idx, "query": query, "class": int(c) + 1, "supports": [str(s) for s in supports]}


def coco_rule(by_class, fold, shot, seed, idx):
    rng = np.random.default_rng((seed, idx, 0))
    c = rng.choice([fold + 4 * v for v in range(20)])
    query = rng.choice(by_class[c + 1])
    supports = rng.choice([x for x in by_class[c + 1] if x != query], shot, replace=False)
    return (str(query), int(c) + 1, [str(s) for s in supports])


def fss_rule(categories, shot, seed, idx):
    files = [f"{c}/{name}" for c in sorted(categories) for name in sorted(f"{n}.jpg" for n in range(1, 11))]
    category, name = files[idx].split("/")
    number = int(name[:-4])
    rng = np.random.default_rng((seed, idx, 0))
    supports = rng.choice([n for n in range(1, 11) if n != number], shot, replace=False)
    return f"{category}/{number}", [f"{category}/{n}" for n in supports]


@pytest.fixture(scope="module")
def pascal_on_disk(tmp_path_factory):
    """The real fold-0 test list, with generated 48x40 images whose label maps show the listed
    classes (and a 255 boundary), in the VOC2012 layout."""
    if not SPLITS.is_dir():
        pytest.skip("the published split lists (../shared/data/splits) are absent")
    root = tmp_path_factory.mktemp("pascal")
    images, by_class = fold_lists(SPLITS, "pascal", "test", 0)
    classes_of = {i: [c for c, ids in by_class.items() if i in ids] for i in images}
    rng = np.random.default_rng(0)
    for image_id in images:
        label = np.zeros((40, 48), np.uint8)
        for k, c in enumerate(classes_of[image_id]):
            label[4 + 8 * k : 12 + 8 * k, 4:40] = c
        label[0, :] = 255
        image = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        for folder, array, ext in (("JPEGImages", image, "jpg"), ("SegmentationClassAug", label, "png")):
            (root / "VOC2012" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / "VOC2012" / folder / f"{image_id}.{ext}")
    return root, images, by_class


@pytest.mark.parametrize("shot", [1, 5])
def test_fssam2_episodes_follows_the_pascal_rule(pascal_on_disk, capsys, shot):
    root, images, by_class = pascal_on_disk
    run_cli([
        "episodes", "--config", str(CONFIGS / "pascal_fold0.yaml"), "--data.root", str(root),
        "--data.splits_dir", str(SPLITS), "--data.shot", str(shot), "--limit", "120",
    ])  # fmt: skip
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    reader = LabelMapReader(str(root), "pascal")
    expected = [pascal_rule(images, by_class, reader.present, [1, 2, 3, 4, 5], shot, 42, i) for i in range(120)]
    assert printed == expected


@needs_splits
def test_coco_rule_on_the_published_lists():
    _, by_class = fold_lists(SPLITS, "coco", "test", 1)
    rule = ClassFirstEpisodes(by_class, [1 + 4 * v + 1 for v in range(20)], shot=5, seed=42, length=1000)
    for idx in range(0, 1000, 37):
        ep = rule.episode(idx)
        assert (ep.query, ep.class_id, list(ep.supports)) == coco_rule(by_class, 1, 5, 42, idx)


@needs_splits
def test_fss_rule_on_the_published_lists():
    categories = read_data_list(SPLITS / "fss" / "test.txt")
    rule = FolderEpisodes({c: [str(n) for n in range(1, 11)] for c in categories}, shot=5, seed=42)
    assert len(rule) == 2400
    for idx in (0, 1, 2, 9, 10, 11, 1234, 2399):
        ep = rule.episode(idx)
        assert (ep.query, list(ep.supports)) == fss_rule(categories, 5, 42, idx)
    assert rule.episode(1).query.endswith("/10")  # string order: 1.jpg, 10.jpg, 2.jpg


def test_scoring_at_original_size_and_ignore():
    """Logits at the input size are resized to each query's own size (align_corners=True)."""
    logits = torch.full((2, 1, 8, 8), -5.0)
    logits[:, :, :, 4:] = 5.0  # right half foreground
    targets = [torch.zeros(3, 6, dtype=torch.long), torch.zeros(5, 2, dtype=torch.long)]
    preds = score_at_original_size(logits, targets)
    assert [tuple(p.shape) for p in preds] == [(3, 6), (5, 2)]
    assert preds[0][0].tolist() == [0, 0, 0, 1, 1, 1] and preds[1][:, 1].all() and not preds[1][:, 0].any()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """All three layouts generated from the synthetic benchmark, and their split lists derived
    with `fssam2 prepare splits` (PASCAL, COCO) or written (FSS-1000)."""
    root = tmp_path_factory.mktemp("data")
    splits = root / "splits"
    pascal = write_pascal_layout(root, SyntheticBenchmark(image_size=64, pool_sizes=(120, 0, 60), min_pixels=20))
    for split, ids in pascal.items():
        (root / f"pascal_{split}.txt").write_text("\n".join(ids))
    run_cli([
        "prepare", "splits", "--benchmark", "pascal", "--root", str(root), "--out", str(splits),
        "--train-ids", str(root / "pascal_train.txt"), "--val-ids", str(root / "pascal_val.txt"), "--min-pixels", "20",
    ])  # fmt: skip
    write_coco_layout(root, SyntheticBenchmark(num_classes=80, image_size=64, pool_sizes=(400, 0, 400)))
    run_cli(
        ["prepare", "splits", "--benchmark", "coco", "--root", str(root), "--out", str(splits), "--min-pixels", "20"]
    )
    names = {split: [f"{split}_cat{k:02d}" for k in range(3)] for split in ("train", "val", "test")}
    write_fss_layout(root, SyntheticBenchmark(image_size=64), names)
    (splits / "fss").mkdir()
    for split, file in (("train", "trn.txt"), ("val", "val.txt"), ("test", "test.txt")):
        (splits / "fss" / file).write_text("\n".join(names[split]) + "\n")
    return root, splits


def test_derived_lists_follow_the_construction_rule(generated):
    root, splits = generated
    reader = LabelMapReader(str(root), "pascal")
    train, train_by_class = fold_lists(splits, "pascal", "train", 2)
    for image_id in train:
        assert not set(reader.present(image_id)) & set(range(11, 16))
    for c, ids in train_by_class.items():
        for image_id in ids:
            assert (reader(image_id)[1] == c).sum() >= 20
    test, by_class = fold_lists(splits, "pascal", "test", 12)
    assert sorted(by_class) == [3, 7, 16, 17, 19, 20]
    assert not (splits / "pascal" / "fss_list" / "train" / "data_list_12.txt").exists()
    assert ast.literal_eval(
        (splits / "coco" / "fss_list" / "val" / "sub_class_file_list_3.txt").read_text()
    ).keys() == {3 + 4 * v + 1 for v in range(20)}


CONFIG_NAMES = [f"pascal_fold{f}" for f in range(4)] + [f"coco_fold{f}" for f in range(4)]
CONFIG_NAMES += [f"coco2pascal_fold{f}" for f in range(4)] + ["fss1000"]
CONFIG_NAMES += [f"sansa/{b}_fold{f}" for b in ("pascal", "coco") for f in range(4)] + ["sansa/fss1000"]
CONFIG_NAMES += [f"gfsam/{b}_fold{f}" for b in ("pascal", "coco") for f in range(4)] + ["gfsam/fss1000"]
TINY_DINOV2 = '{"encoder": "dinov2_tiny", "encoder_checkpoint": "random"}'  # GF-SAM's encoder, tiny and random


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_tests_end_to_end_on_generated_data(generated, tmp_path, name):
    root, splits = generated
    official_size = "input_size" in (CONFIGS / f"{name}.yaml").read_text()  # SANSA's loader size: keep it small
    cli = run_cli([
        "test", "--config", str(CONFIGS / f"{name}.yaml"), "--data.root", str(root), "--data.splits_dir", str(splits),
        "--model.sam2_config", "fssam2_tiny", "--model.sam2_checkpoint", "random", "--model.image_size", "64", "--data.test_episodes", "6",
        "--data.batch_size", "3", "--data.num_workers", "0", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
        *(["--model.method_args", '{"input_size": 48}'] if official_size else []),
        *(["--model.method_args", TINY_DINOV2] if name.startswith("gfsam/") else []),
    ])  # fmt: skip
    metrics = cli.trainer.callback_metrics
    assert 0 <= metrics["test/miou"] <= 100 and 0 <= metrics["test/fbiou"] <= 100
    expected = 3 * 10 if name.endswith("fss1000") else 6  # FSS-1000: every test image once
    assert len(cli.datamodule.dataset("test")) == expected
    # per-class IoU by name where the benchmark has them (FSS-1000's categories), else by class id
    results = json.loads((tmp_path / "test_metrics.json").read_text())
    per_class = results["per_class"]
    ids = cli.datamodule.class_ids("test")
    fss = name.endswith("fss1000")
    rule = cli.datamodule.episodes("test")
    scored = {str(rule.episode(i, EVAL_EPOCH).class_id) for i in range(len(rule))}  # 6 episodes may miss a class
    assert set(per_class) == ({f"test_cat{k:02d}" for k in range(3)} if fss else scored)
    assert fss or set(results["classes_not_scored"]) == set(map(str, ids)) - scored
    assert json.loads((tmp_path / "test_metrics.json").read_text())["method"] == (
        {"sansa": "SANSA", "gfsam": "GFSAM"}.get(name.split("/")[0], "FewShotSAM2")
    )


def test_fss_label_maps_use_the_category_class(generated):
    root, splits = generated
    dm = FSS1000DataModule(root=str(root), splits_dir=str(splits), shot=2)
    rule = dm.episodes("test")
    image, label = dm.image_reader("test")(rule.episode(12).query)
    assert image.shape == (64, 64, 3) and set(np.unique(label)) <= {0, 2} and (label == 2).any()


def test_prepare_coco_renders_label_maps_resumably(tmp_path, capsys):
    base = tmp_path / "COCO2014" / "annotations"
    base.mkdir(parents=True)
    square = [[2.0, 2.0, 12.0, 2.0, 12.0, 12.0, 2.0, 12.0]]
    data = {
        "images": [{"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "height": 16, "width": 20}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 90,
                "segmentation": square,
                "area": 100.0,
                "bbox": [2, 2, 10, 10],
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": i, "name": f"c{i}"} for i in (1, 5, 90)],
    }
    (base / "instances_val2014.json").write_text(json.dumps(data))
    run_cli(["prepare", "coco", "--root", str(tmp_path), "--splits", "val2014", "--labels-only"])
    label = np.asarray(Image.open(base / "val2014" / "COCO_val2014_000000000007.png"))
    assert label.shape == (16, 20) and set(np.unique(label)) == {0, 3}  # id 90 is the 3rd category
    assert (label == 3).sum() >= 81
    run_cli(["prepare", "coco", "--root", str(tmp_path), "--splits", "val2014", "--labels-only"])
    assert "wrote 0 label maps" in capsys.readouterr().out.splitlines()[-1]


# bad input: one clear error each
def bad(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        run_cli(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err, err


def episodes_args(root, splits, config="pascal_fold0"):
    return [
        "episodes",
        "--config",
        str(CONFIGS / f"{config}.yaml"),
        "--data.root",
        str(root),
        "--data.splits_dir",
        str(splits),
        "--limit",
        "2",
    ]


def test_bad_dataset_roots_and_lists(generated, tmp_path, capsys):
    root, splits = generated
    bad(capsys, episodes_args(tmp_path / "nowhere", splits), "nowhere does not exist")
    bad(capsys, episodes_args(tmp_path, splits), "has no folder VOC2012/JPEGImages")
    bad(capsys, episodes_args(root, tmp_path), "pascal/fss_list/val/data_list_0.txt is missing")
    bad(
        capsys,
        episodes_args(root, splits, "coco_fold1")[:-2] + ["--split", "train", "--data.shot", "500"],
        "fewer than shot + 1 = 501",
    )


def test_listed_but_absent_ids_and_broken_files(generated, tmp_path, capsys):
    root, splits = generated
    lists = tmp_path / "lists"
    folder = lists / "pascal" / "fss_list" / "val"
    folder.mkdir(parents=True)
    images, by_class = fold_lists(splits, "pascal", "test", 0)
    (folder / "data_list_0.txt").write_text("\n".join([*images, "2099_000001", "2099_000002"]))
    (folder / "sub_class_file_list_0.txt").write_text(repr(by_class))
    bad(
        capsys,
        episodes_args(root, lists),
        "2 image ids listed in the PASCAL-5i fold 0 test split lists are absent on disk, e.g. ['2099_000001'",
    )

    reader = LabelMapReader(str(root), "pascal")
    image_path, label_path = reader.paths(images[0])
    data = image_path.read_bytes()
    image_path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="unreadable or truncated"):
        reader(images[0])
    image_path.write_bytes(data)
    label = np.asarray(Image.open(label_path))
    Image.fromarray(label[:-3]).save(label_path)
    with pytest.raises(InputError, match=r"is 64x61 but image .* is 64x64: they must be the same size"):
        reader(images[0])
    Image.fromarray(label).save(label_path)


def test_coco_annotation_that_is_not_coco(tmp_path, capsys):
    base = tmp_path / "COCO2014" / "annotations"
    base.mkdir(parents=True)
    (base / "instances_val2014.json").write_text(json.dumps({"info": {}}))
    bad(
        capsys,
        ["prepare", "coco", "--root", str(tmp_path), "--splits", "val2014", "--labels-only"],
        "is not a COCO instance annotation file",
    )
    (base / "instances_val2014.json").write_text("{not json")
    bad(capsys, ["prepare", "coco", "--root", str(tmp_path), "--splits", "val2014", "--labels-only"], "is not JSON")


def test_fold_options_are_checked(tmp_path):
    with pytest.raises(InputError, match="PASCAL-5i folds are 0-3, and 10-13"):
        PascalDataModule(root=str(tmp_path), splits_dir=str(tmp_path), fold=5)
    with pytest.raises(InputError, match="COCO-20i folds are 0-3"):
        CocoDataModule(root=str(tmp_path), splits_dir=str(tmp_path), fold=10)
    with pytest.raises(InputError, match="train on COCO-20i fold 1"):
        PascalDataModule(root=str(tmp_path), splits_dir=str(tmp_path), fold=11).class_ids("train")


# your own data: one folder per class
@pytest.fixture
def class_folders(tmp_path):
    bench = SyntheticBenchmark(image_size=48)
    root = tmp_path / "mine"
    for k, name in enumerate(["cat", "dog", "eel", "fox", "gnu", "hen"]):
        (root / name).mkdir(parents=True)
        for j in range(4):
            image, label = bench.render("train", 10 * k + j, top_class=k + 1)
            Image.fromarray(image).save(root / name / f"photo_{j}.jpg")
            Image.fromarray(np.where(label == k + 1, 255, 0).astype(np.uint8)).save(root / name / f"photo_{j}.png")
    return root


def test_folder_dataset_splits_and_episodes(class_folders):
    from fssam2.benchmarks import FolderDataModule

    by_fold = FolderDataModule(root=str(class_folders), fold=1, num_folds=3, shot=2)
    rule = by_fold.episodes("test")
    assert len(rule) == 8 and [rule.episode(i).query for i in (0, 4)] == ["eel/photo_0", "fox/photo_0"]
    assert by_fold.episodes("train").members.keys() == {"cat", "dog", "gnu", "hen"}
    named = FolderDataModule(root=str(class_folders), test_classes=["hen", "cat"], shot=3)
    for i in range(len(named.episodes("test"))):
        ep = named.episodes("test").episode(i)
        category = ep.query.split("/")[0]
        assert category in ("cat", "hen") and ep.query not in ep.supports
        assert all(s.startswith(category + "/") for s in ep.supports) and len(ep.supports) == 3
    image, label = named.image_reader("test")("hen/photo_2")
    assert image.shape == (48, 48, 3) and set(np.unique(label)) == {0, 2}  # hen is class 2 of [cat, hen]


@pytest.mark.slow
def test_folder_dataset_through_the_cli(class_folders, tmp_path):
    cli = run_cli([
        "test", "--config", str(Path(__file__).parent / "configs" / "tiny.yaml"),
        "--data", "fssam2.benchmarks.FolderDataModule", "--data.root", str(class_folders), "--data.test_classes", "[eel, fox]",
        "--data.batch_size", "3", "--data.num_workers", "0", "--trainer.default_root_dir", str(tmp_path),
    ])  # fmt: skip
    assert len(cli.datamodule.dataset("test")) == 8
    # keyed by the class folders' names (they were 1, 2: which was which?)
    assert set(json.loads((tmp_path / "test_metrics.json").read_text())["per_class"]) == {"eel", "fox"}


def test_folder_dataset_bad_input(class_folders):
    from fssam2.benchmarks import FolderDataModule

    with pytest.raises(InputError, match=r"data.test_classes \['owl'\] have no folder"):
        FolderDataModule(root=str(class_folders), test_classes=["owl"]).episodes("test")
    (class_folders / "cat" / "photo_1.png").unlink()
    with pytest.raises(InputError, match=r"Images in .*cat have no mask, e.g. \['photo_1'\]"):
        FolderDataModule(root=str(class_folders)).episodes("test")
    (class_folders / "cat" / "photo_1.jpg").unlink()
    (class_folders / "dog" / "stray.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"Masks in .*dog have no image, e.g. \['stray'\]"):
        FolderDataModule(root=str(class_folders)).episodes("test")
    with pytest.raises(InputError, match="does not exist"):
        FolderDataModule(root=str(class_folders / "nope")).episodes("test")


def test_empty_support_mask_is_refused_naming_the_mask(class_folders):
    from fssam2.benchmarks import FolderDataModule, FolderReader, Pair

    empty = class_folders / "hen" / "photo_2.png"
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(empty)
    dm = FolderDataModule(root=str(class_folders), test_classes=["hen"], shot=1)
    dm.image_size = 32
    with pytest.raises(InputError, match=r"Mask .*hen[/\\]photo_2\.png has no object pixel"):
        for i in range(4):  # every test episode: photo_2 is some episode's support
            dm.dataset("test")[(i, 0)]
    # the reader refuses it too, should the file be emptied after the scan
    files = {"hen": {f"photo_{j}": Pair(f"photo_{j}.jpg", f"photo_{j}.png") for j in range(4)}}
    with pytest.raises(InputError, match=r"Mask .*hen[/\\]photo_2\.png has no object pixel"):
        FolderReader(str(class_folders), files, {"hen": 1})("hen/photo_2")


def test_hidden_files_and_folders_are_not_images(class_folders):
    from fssam2.benchmarks import FolderDataModule

    for name in ("._photo_0.jpg", "._photo_0.png", ".DS_Store", "._stray.jpg"):
        (class_folders / "cat" / name).write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (class_folders / ".thumbnails").mkdir()
    (class_folders / ".thumbnails" / "x.jpg").write_bytes(b"")
    dm = FolderDataModule(root=str(class_folders), test_classes=["cat"], shot=1)
    assert sorted(dm.files) == ["cat", "dog", "eel", "fox", "gnu", "hen"]
    assert sorted(dm.files["cat"]) == [f"photo_{j}" for j in range(4)]
    dm.image_size = 32
    assert [dm.dataset("test")[(i, 0)]["query"] for i in range(4)] == [f"cat/photo_{j}" for j in range(4)]


def folder_episodes(capsys, root, split, *options):
    """`fssam2 episodes` of a folder dataset: one dict per episode."""
    data = ["--data", "fssam2.benchmarks.FolderDataModule", "--data.root", str(root)]
    run_cli(["episodes", *data, "--split", split, *options])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def images_of(episodes):
    return {e["query"] for e in episodes} | {s for e in episodes for s in e["supports"]}


@pytest.mark.parametrize("fold", ["0", "2"])
def test_folder_validation_never_sees_a_test_image(class_folders, capsys, fold):
    """Validation (which picks best.ckpt) walked the test images, with seed + 1."""
    test = folder_episodes(capsys, class_folders, "test", "--data.fold", fold)
    val = folder_episodes(capsys, class_folders, "val", "--data.fold", fold)
    train = folder_episodes(capsys, class_folders, "train", "--data.fold", fold, "--epoch", "0")
    assert val and not images_of(val) & images_of(test)
    test_classes = {q.split("/")[0] for q in images_of(test)}
    assert not {q.split("/")[0] for q in images_of(val)} & test_classes
    # every training class holds ceil(0.2 * 4) = 1 of its 4 images out of training, for validation
    val_queries = [e["query"] for e in val]
    assert sorted(q.split("/")[0] for q in val_queries) == sorted(
        {"cat", "dog", "eel", "fox", "gnu", "hen"} - test_classes
    )
    assert not set(val_queries) & images_of(train)
    assert len(train) == 3 * len(val_queries)  # the other 3 of each training class train
    assert all(e["query"] not in e["supports"] for e in val)
    assert folder_episodes(capsys, class_folders, "val", "--data.fold", fold) == val  # the same every run


@pytest.mark.slow
def test_folder_fit_validates_on_held_out_training_images(class_folders, tmp_path):
    """fit's validation (which picks best.ckpt) scores the training classes' held-out images."""
    cli = run_cli([
        "fit", "--config", str(Path(__file__).parent / "configs" / "tiny.yaml"),
        "--data", "fssam2.benchmarks.FolderDataModule", "--data.root", str(class_folders), "--data.test_classes", "[eel, fox]",
        "--data.batch_size", "2", "--data.num_workers", "0", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2", "--trainer.default_root_dir", str(tmp_path),
    ])  # fmt: skip
    val = cli.datamodule.dataset("val")
    queries = [val.episodes.episode(i).query for i in range(len(val))]
    assert sorted(q.split("/")[0] for q in queries) == ["cat", "dog", "gnu", "hen"]
    scored = {k for k in cli.trainer.callback_metrics if k.startswith("val/iou_class_")}
    assert scored == {f"val/iou_class_{c}" for c in (1, 2, 3, 4)} and (tmp_path / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.slow
def test_a_folder_dataset_fits_without_validation_at_val_fraction_0(class_folders, tmp_path, capsys):
    """val_fraction 0 trains on every image of the training classes, validates nothing, and still
    saves best.ckpt (the latest state: no validation picks one) and last.ckpt."""
    run = [
        "--config", str(Path(__file__).parent / "configs" / "tiny.yaml"), "--data", "fssam2.benchmarks.FolderDataModule",
        "--data.root", str(class_folders), "--data.test_classes", "[eel, fox]", "--data.val_fraction", "0",
        "--data.batch_size", "2", "--data.num_workers", "0", "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*could not find the monitored key")
        cli = run_cli(["fit", *run, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2"])
    assert cli.trainer.global_step == 4 and not any(k.startswith("val/") for k in cli.trainer.callback_metrics)
    assert len(cli.datamodule.dataset("train")) == 16  # all 4 images of the 4 training classes
    assert "best checkpoint (no validation ran: the latest state)" in capsys.readouterr().out
    best, last = (torch.load(tmp_path / "checkpoints" / f"{n}.ckpt", weights_only=False) for n in ("best", "last"))
    assert best["global_step"] == last["global_step"] == 4
    one_line_error(capsys, ["validate", *run], "data.val_fraction=0 holds out no image")


def test_folder_validation_split_bad_input(class_folders, capsys):
    data = ["episodes", "--data", "fssam2.benchmarks.FolderDataModule", "--data.root", str(class_folders)]
    # 4 images a class and 3-shot episodes: training needs all 4, validation gets none
    one_line_error(capsys, [*data, "--split", "val", "--data.shot", "3"], "can spare an image for validation")
    # K up to 3 (train_shots' high end) and a query leave no image of 4: the need is 3 + 2, whatever val_fraction
    err = one_line_error(
        capsys, [*data, "--split", "val", "--data.train_shots", "[1, 3]", "--data.val_fraction", "0.5"], "spare"
    )
    assert "(data.train_shots=[1, 3]), so a class needs 5 images, and the largest has 4" in err, err
    assert "raise data.val_fraction" not in err and "data.val_fraction=0 to fit without validation" in err
    one_line_error(capsys, [*data, "--split", "val", "--data.val_fraction", "1.5"], "data.val_fraction=1.5")
    folder_episodes(capsys, class_folders, "test", "--data.shot", "3")  # testing needs no validation


def test_nested_class_folders_are_refused_naming_the_folder(class_folders, capsys):
    """<root>/<group>/<class>/ folders were dropped without a word (their images never used)."""
    (class_folders / "__MACOSX" / "cat").mkdir(parents=True)  # macOS archives' metadata: skipped
    (class_folders / "__MACOSX" / "cat" / "._photo_0.jpg").write_bytes(b"\x00\x05\x16\x07")
    assert len(folder_episodes(capsys, class_folders, "test")) == 8
    nested = class_folders / "dog" / "puppies"
    nested.mkdir()
    shutil.copy(class_folders / "dog" / "photo_0.jpg", nested / "pup.jpg")
    shutil.copy(class_folders / "dog" / "photo_0.png", nested / "pup.png")
    data = ["--data", "fssam2.benchmarks.FolderDataModule", "--data.root", str(class_folders)]
    one_line_error(capsys, ["episodes", *data], f"Class folder {class_folders / 'dog'} holds the folder puppies")


def test_upper_case_extensions_pair_up(class_folders, capsys):
    """`0.JPG` + `0.PNG` was refused: "Mask .../0.png does not exist"."""
    for j in range(4):
        for ext in ("jpg", "png"):
            (class_folders / "cat" / f"photo_{j}.{ext}").rename(class_folders / "cat" / f"photo_{j}.{ext.upper()}")
    (class_folders / "dog" / "photo_1.jpg").rename(class_folders / "dog" / "photo_1.Jpeg")
    episodes = folder_episodes(capsys, class_folders, "test")
    assert {e["query"] for e in episodes} >= {"cat/photo_0", "dog/photo_1"}
    from fssam2.benchmarks import FolderDataModule
    from fssam2.segment import support_pairs

    dm = FolderDataModule(root=str(class_folders), test_classes=["cat", "dog"], shot=1)
    dm.image_size = 32
    for index in range(8):
        item = dm.dataset("test")[(index, -1)]
        assert item["support_masks"].sum() > 0 and (item["query_target"] == 1).sum() > 0
    pairs = support_pairs([[str(class_folders / "cat")]])  # fssam2 segment --support FOLDER
    assert [p[1].name for p in pairs] == [f"photo_{j}.PNG" for j in range(4)]


@pytest.mark.parametrize(
    "twice", [("photo_0.png", "photo_0.PNG"), ("photo_0.jpg", "photo_0.JPG"), ("photo_0.jpg", "photo_0.tif")]
)
def test_two_images_or_masks_of_one_name_are_refused(class_folders, capsys, twice):
    """Which file was the pair was left to the order of the folder listing."""
    folder = class_folders / "eel"
    try:
        shutil.copy(folder / twice[0], folder / twice[1])
    except shutil.SameFileError:
        pytest.skip("this file system ignores letter case: the two names are one file")
    data = ["--data", "fssam2.benchmarks.FolderDataModule", "--data.root", str(class_folders)]
    kind = "masks" if twice[0].endswith(".png") else "images"
    one_line_error(capsys, ["episodes", *data], f"{folder} holds 2 {kind} named photo_0 ({', '.join(sorted(twice))})")


def test_prepare_splits_refuses_lists_nothing_meets_and_writes_nothing(tmp_path, capsys):
    """Label maps where no class reaches the pixel rule (here: all background) would give empty
    lists and a later fit 'the split's data list is empty' without a file named."""
    ids = write_pascal_layout(tmp_path, SyntheticBenchmark(image_size=48, pool_sizes=(8, 0, 8)))
    for label in (tmp_path / "VOC2012" / "SegmentationClassAug").glob("*.png"):
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(label)
    for split, split_ids in ids.items():
        (tmp_path / f"{split}.txt").write_text("\n".join(split_ids))
    out = tmp_path / "splits"
    args = ["prepare", "splits", "--benchmark", "pascal", "--root", str(tmp_path), "--out", str(out)]
    bad(
        capsys,
        [*args, "--train-ids", str(tmp_path / "train.txt"), "--val-ids", str(tmp_path / "val.txt")],
        "would be empty",
    )
    assert not out.exists()


def test_an_empty_split_list_is_refused_naming_the_file(generated, tmp_path, capsys):
    root, splits = generated
    copy = tmp_path / "splits"
    shutil.copytree(splits, copy)
    empty = copy / "pascal" / "fss_list" / "val" / "data_list_0.txt"
    empty.write_text("\n")
    bad(capsys, episodes_args(root, copy), str(empty))


# the data home: root and lists default to $FSSAM2_DATA (else a folder under the user's cache)
TINY_MODEL = ["--model.sam2_config", "fssam2_tiny", "--model.sam2_checkpoint", "random", "--model.image_size", "64"]


def test_datamodules_default_to_the_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FSSAM2_DATA", str(tmp_path / "home"))
    for dm in (PascalDataModule(), CocoDataModule(fold=2), FSS1000DataModule()):
        assert (dm.root, dm.splits_dir) == (str(tmp_path / "home"), str(tmp_path / "home" / "splits"))
        assert (dm.hparams["root"], dm.hparams_initial["splits_dir"]) == (dm.root, dm.splits_dir)
    given = PascalDataModule(root=str(tmp_path / "mine"))  # lists default to <root>/splits, as prepare writes them
    assert given.splits_dir == str(tmp_path / "mine" / "splits")
    monkeypatch.delenv("FSSAM2_DATA")
    monkeypatch.setenv("FSSAM2_HOME", str(tmp_path / "cache"))
    assert PascalDataModule().root == str(tmp_path / "cache" / "data")  # resolved when made, not at import


@pytest.mark.slow
def test_cli_tests_from_the_data_home_with_no_data_option(generated, tmp_path, monkeypatch):
    root, _ = generated  # its lists are in <root>/splits: the data home's layout
    monkeypatch.setenv("FSSAM2_DATA", str(root))
    run_dir = tmp_path / "run"
    run_cli([
        "test", "--config", str(CONFIGS / "pascal_fold0.yaml"), *TINY_MODEL, "--data.test_episodes", "6",
        "--data.batch_size", "3", "--data.num_workers", "0", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(run_dir),
    ])  # fmt: skip
    results = json.loads((run_dir / "test_metrics.json").read_text())
    assert (results["data_root"], results["splits_dir"]) == (str(root.resolve()), str((root / "splits").resolve()))
    assert results["episodes"] == 6


def test_missing_data_at_the_data_home_names_the_prepare_command(generated, tmp_path, monkeypatch, capsys):
    root, _ = generated
    home = tmp_path / "home"
    monkeypatch.setenv("FSSAM2_DATA", str(home))
    test = ["test", *TINY_MODEL, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "run")]
    for config, missing, command in (
        ("pascal_fold0", home / "VOC2012" / "JPEGImages", "fssam2 prepare pascal"),
        ("coco_fold1", home / "COCO2014" / "val2014", "fssam2 prepare coco"),
        ("fss1000", home / "FSS-1000", "fssam2 prepare fss1000"),
    ):
        with pytest.raises(SystemExit) as exit_:
            run_cli([test[0], "--config", str(CONFIGS / f"{config}.yaml"), *test[1:]])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith("fssam2: error: ") and "Traceback" not in err, err
        assert f"is not prepared: {missing} is missing; run `{command}` (or give --data.root)." in err, err
    assert not (tmp_path / "run").exists()  # nothing written by a run that did not start
    # the dataset is there, its lists are not
    home.mkdir()
    (home / "VOC2012").symlink_to(root / "VOC2012")
    bad(
        capsys,
        episodes_args(root, root)[:3] + ["--limit", "2"],
        f"PASCAL-5i split lists are not prepared: {home / 'splits' / 'pascal' / 'fss_list' / 'val' / 'data_list_0.txt'} "
        "is missing; run `fssam2 prepare splits` (or give --data.splits_dir).",
    )


def test_missing_data_is_said_before_released_weights_are_fetched(generated, tmp_path, monkeypatch, capsys):
    """A fresh machine: the published config (SAM2.1 B+, weights fetched by name on first use) with
    no data prepared names the missing data without downloading or building the model first."""
    root, _ = generated
    home = tmp_path / "home"
    monkeypatch.setenv("FSSAM2_DATA", str(home))
    monkeypatch.setattr(module, "download", lambda *a, **k: pytest.fail("weights fetched before the data check"))
    run = ["--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "run")]
    for subcommand in ("fit", "test"):
        bad(capsys, [subcommand, "--config", str(CONFIGS / "pascal_fold0.yaml"), *run], "run `fssam2 prepare pascal`")
    home.mkdir()
    (home / "VOC2012").symlink_to(root / "VOC2012")  # the dataset, not its lists
    bad(capsys, ["fit", "--config", str(CONFIGS / "pascal_fold0.yaml"), *run], "run `fssam2 prepare splits`")
    assert not (tmp_path / "run").exists()


def test_an_explicit_data_root_is_used_and_named_in_errors(generated, tmp_path, monkeypatch, capsys):
    root, splits = generated
    monkeypatch.setenv("FSSAM2_DATA", str(tmp_path / "empty"))
    args = ["episodes", "--config", str(CONFIGS / "pascal_fold0.yaml"), "--limit", "2"]
    run_cli([*args, "--data.root", str(root)])  # lists from <root>/splits
    assert len(capsys.readouterr().out.splitlines()) == 2
    nowhere = tmp_path / "nowhere"
    bad(
        capsys,
        [*args, "--data.root", str(nowhere)],
        f"PASCAL-5i root {nowhere} does not exist: pass the folder holding VOC2012/JPEGImages as --data.root, "
        f"or run `fssam2 prepare pascal --root {nowhere}`.",
    )
    bad(capsys, [*args, "--data.root", str(tmp_path)], "has no folder VOC2012/JPEGImages")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "VOC2012").symlink_to(root / "VOC2012")
    bad(capsys, [*args, "--data.root", str(bare)], f"run `fssam2 prepare splits --root {bare}`")
    bad(capsys, [*args, "--data.root", str(bare), "--data.splits_dir", str(tmp_path)], "point --data.splits_dir")
