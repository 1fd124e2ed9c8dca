"""`fssam2 prepare splits`: the published lists fetched over a loopback server (byte for byte,
checked, never overwriting), and the derivation rule reproducing the published PASCAL-5i val
lists on label maps made to obey it. Reads ../shared/data/splits (absent in a user's clone)."""

import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fssam2.benchmarks import FSS1000DataModule, fold_lists, read_class_file, read_data_list
from fssam2.cli import run_cli
from fssam2.prepare import splits
from helpers import SHARED, one_line_error
from loopback import serve

SPLITS = SHARED / "data" / "splits"
pytestmark = pytest.mark.skipif(
    not SPLITS.is_dir(), reason="the published split lists (../shared/data/splits) are absent"
)


def shared_files() -> dict[str, bytes]:
    return {
        p.relative_to(SPLITS).as_posix(): p.read_bytes()
        for p in sorted(SPLITS.rglob("*"))
        if p.is_file() and p.name != "README.md"
    }


@pytest.fixture(scope="module")
def published() -> dict[str, bytes]:
    return shared_files()


bad = one_line_error


def test_the_table_pins_every_published_file(published):
    assert splits.BASE_URL == (
        "https://raw.githubusercontent.com/fornib/FS-SAM2/699cdf3e58bfc423457fe3d9ea8b43903d7edf4f/data/splits/lists"
    )
    assert len(published) == 50
    assert splits.PUBLISHED_LISTS == {rel: hashlib.sha256(data).hexdigest() for rel, data in published.items()}


def test_fetched_lists_are_the_published_ones_and_read(published, monkeypatch, tmp_path, capsys):
    with serve({f"/lists/{rel}": data for rel, data in published.items()}) as served:
        monkeypatch.setattr(splits, "BASE_URL", served.url("/lists"))
        run_cli(["prepare", "splits", "--root", str(tmp_path), "--quiet"])
        assert "50 fetched, 0 already there (50 files)" in capsys.readouterr().out
        out = tmp_path / "splits"
        assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == published
        requests = len(served.requests)
        run_cli(["prepare", "splits", "--root", str(tmp_path), "--quiet"])
        assert "0 fetched, 50 already there" in capsys.readouterr().out and len(served.requests) == requests
    images, by_class = fold_lists(out, "pascal", "test", 0)  # what PascalDataModule.episodes reads
    assert len(images) == 364 and sorted(by_class) == [1, 2, 3, 4, 5]
    train, _ = fold_lists(out, "coco", "train", 3)
    assert train[0].startswith("COCO_train2014_")
    (tmp_path / "FSS-1000").mkdir()  # the DataModule looks for the dataset before its lists
    assert len(FSS1000DataModule(root=str(tmp_path), splits_dir=str(out)).categories("test")) == 240


def test_mirror_only_and_a_local_copy(published, monkeypatch, tmp_path, capsys):
    with serve({f"/mirror/{rel}": data for rel, data in published.items()}) as served:
        out = tmp_path / "lists"
        run_cli(["prepare", "splits", "--out", str(out), "--mirror", served.url("/mirror/"), "--only", "fss"])
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt")) == [
            "fss/test.txt",
            "fss/trn.txt",
            "fss/val.txt",
        ]
        assert {p for p, _ in served.requests} == {f"/mirror/fss/{f}.txt" for f in ("test", "trn", "val")}
    monkeypatch.setattr(splits, "BASE_URL", "http://127.0.0.1:9/lists")  # nothing listens there
    capsys.readouterr()
    run_cli(["prepare", "splits", "--out", str(out), "--archives", str(SPLITS), "--only", "pascal", "coco", "--quiet"])
    assert "0 fetched, 47 copied from --archives, 0 already there (47 files)" in capsys.readouterr().out
    assert (out / "coco" / "fss_list" / "val" / "sub_class_file_list_3.txt").read_bytes() == published[
        "coco/fss_list/val/sub_class_file_list_3.txt"
    ]


def test_a_tampered_file_is_refused_and_not_kept(published, tmp_path, capsys):
    rel = "pascal/fss_list/val/data_list_0.txt"
    files = {f"/lists/{r}": data for r, data in published.items()}
    files[f"/lists/{rel}"] = published[rel].replace(b"2007_000033", b"2007_000034")
    with serve(files) as served:
        url = served.url(f"/lists/{rel}")
        err = bad(
            capsys, ["prepare", "splits", "--root", str(tmp_path), "--mirror", served.url("/lists"), "--quiet"], url
        )
    tampered = hashlib.sha256(files[f"/lists/{rel}"]).hexdigest()
    assert f"has sha256:{tampered}, expected sha256:{splits.PUBLISHED_LISTS[rel]}: it was not kept" in err
    target = tmp_path / "splits" / rel
    assert not target.exists() and not target.with_name(target.name + ".part").exists()


def test_a_different_file_in_out_is_refused_not_overwritten(published, tmp_path, capsys):
    mine = tmp_path / "splits" / "pascal" / "val.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("JPEGImages/2007_000033.jpg SegmentationClassAug/2007_000033.png\n")
    with serve({f"/lists/{r}": data for r, data in published.items()}) as served:
        err = bad(capsys, ["prepare", "splits", "--root", str(tmp_path), "--mirror", served.url("/lists")], str(mine))
        assert served.requests == []  # refused before fetching anything
    assert "is your own or an older copy and is left as it is" in err
    assert mine.read_text().count("\n") == 1 and sorted(p.name for p in mine.parent.iterdir()) == ["val.txt"]


def voc_id(line: str) -> str:
    return Path(line.split()[0]).stem


def test_derived_pascal_val_lists_reproduce_the_published(tmp_path, capsys):
    """Every VOC val image gets a 128x128 label map in which exactly the classes the published val
    class files list for it cover >= 2*32*32 pixels (the first at exactly 2048), another class
    2047 pixels (one short), and a 255 boundary; derived lists must equal the published ones."""
    val_ids = [voc_id(line) for line in (SPLITS / "pascal" / "val.txt").read_text().splitlines() if line.strip()]
    shown = defaultdict(set)
    for fold in (0, 1, 2, 3):  # together they hold out all 20 classes
        for c, ids in read_class_file(
            SPLITS / "pascal" / "fss_list" / "val" / f"sub_class_file_list_{fold}.txt"
        ).items():
            for image_id in ids:
                shown[image_id].add(c)
    assert len(val_ids) == 1449 and set(shown) <= set(val_ids)
    labels = tmp_path / "VOC2012" / "SegmentationClassAug"
    labels.mkdir(parents=True)
    for k, image_id in enumerate([*val_ids, "2099_000001", "2099_000002"]):
        classes = sorted(shown[image_id]) if k < len(val_ids) else [1 + 5 * (k - len(val_ids))]  # train: 1, 6
        flat, pos = np.zeros(128 * 128, np.uint8), 0
        for c in classes:
            flat[pos : pos + 2048] = c
            pos += 2048
        if k < len(val_ids):
            other = next(c for c in [*range(k % 20 + 1, 21), *range(1, 21)] if c not in classes)
            flat[pos : pos + 2047] = other
            pos += 2047
        flat[pos : pos + 64] = 255
        Image.fromarray(flat.reshape(128, 128)).save(labels / f"{image_id}.png")
    (tmp_path / "val.txt").write_text("\n".join(val_ids) + "\n")
    (tmp_path / "train.txt").write_text("2099_000001\n2099_000002\n")
    out = tmp_path / "derived"
    run_cli([
        "prepare", "splits", "--benchmark", "pascal", "--root", str(tmp_path), "--out", str(out),
        "--train-ids", str(tmp_path / "train.txt"), "--val-ids", str(tmp_path / "val.txt"), "--quiet",
    ])  # fmt: skip
    for fold in (0, 1, 2, 3, 10, 11, 12, 13):
        published = SPLITS / "pascal" / "fss_list" / "val"
        derived = out / "pascal" / "fss_list" / "val"
        name = f"data_list_{fold}.txt"
        assert read_data_list(derived / name) == read_data_list(published / name), name  # in the same order
        name = f"sub_class_file_list_{fold}.txt"
        assert read_class_file(derived / name) == read_class_file(published / name), name
