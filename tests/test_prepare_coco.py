"""`fssam2 prepare coco` against a loopback server serving COCO 2014's three zips in their real
member layouts (generated, small): download, check, extract, render, verify, marker; resume,
refusals, interruption, an existing copy; then split lists and `fssam2 test` on the result."""

import hashlib
import io
import json
import shutil
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from fssam2.benchmarks import fold_lists, read_label
from fssam2.cli import run_cli
from fssam2.downloads import Archive
from fssam2.prepare import coco, marker
from helpers import one_line_error
from loopback import serve

# COCO's 80 category ids: 1..90 with ten never used
CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
FOLD0 = [1 + 4 * v for v in range(20)]  # COCO-20i fold-0 classes (1-based contiguous)
PATHS = {"annotations": "/annotations/annotations_trainval2014.zip"} | {
    s: f"/zips/{s}.zip" for s in ("train2014", "val2014")
}
TINY = Path(__file__).parent / "configs" / "tiny.yaml"


def split_classes(split: str, i: int) -> list[int]:
    """The contiguous classes (1..80) shown by image i: val covers every fold-0 class at least
    twice, and folds 1-3 once each; a train image shows classes of one fold only."""
    if split == "val2014":
        return [FOLD0[(2 * i) % 20], FOLD0[(2 * i + 1) % 20]] if i < 24 else [i - 22]
    r = i % 4
    return [r + 1 + 4 * ((i // 4) % 20), r + 1 + 4 * ((i // 4 + 5) % 20)]


def make_split(split: str, n: int, rng: np.random.Generator):
    """(jpeg bytes by image id, COCO instances dict): two objects an image (a polygon and a
    compressed RLE, or an uncompressed crowd RLE), and a 3x3 speck of another class."""
    images, infos, anns = {}, [], []
    for i in range(n):
        image_id = 1000 * (split == "val2014") + 9 + i
        name = f"COCO_{split}_{image_id:012d}"
        height, width = (64, 64) if i % 3 else (48, 64)
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        first, second = split_classes(split, i) + ([] if i < 24 or split == "train2014" else [None])
        polygon = [[4.0, 4.0, 28.0, 4.0, 28.0, height - 4.0, 4.0, height - 4.0]]
        segs = [(first, polygon, 0)]
        if second is not None:
            mask = np.zeros((height, width), np.uint8, order="F")
            mask[4 : height - 4, 36:60] = 1
            if i % 5 == 0:  # a crowd region, uncompressed RLE as COCO writes them
                segs.append((second, {"counts": _uncompressed_counts(mask), "size": [height, width]}, 1))
            else:
                rle = mask_utils.encode(np.asfortranarray(mask))
                segs.append((second, {"counts": rle["counts"].decode(), "size": [height, width]}, 0))
        speck = [[30.0, 30.0, 33.0, 30.0, 33.0, 33.0, 30.0, 33.0]]
        segs.append(((first + 1) % 80 + 1, speck, 0))
        for value, seg, crowd in segs:
            pixels[mask_utils.decode(_as_rle(seg, height, width)) > 0] = 40 * (value % 6)
            anns.append({
                "id": len(anns) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[value - 1],
                "segmentation": seg, "area": 1.0, "bbox": [0, 0, 1, 1], "iscrowd": crowd,
            })  # fmt: skip
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG")
        images[name] = buffer.getvalue()
        infos.append({"id": image_id, "file_name": f"{name}.jpg", "height": height, "width": width})
    categories = [{"id": c, "name": f"category{c}", "supercategory": "thing"} for c in CATEGORY_IDS]
    return images, {"images": infos, "annotations": anns, "categories": categories}


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def _as_rle(seg, height: int, width: int):
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg["counts"], list):
        return mask_utils.frPyObjects(seg, height, width)
    return {"counts": seg["counts"].encode(), "size": seg["size"]}


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def published():
    """The three zips ({key: bytes}) and what they hold."""
    rng = np.random.default_rng(0)
    splits = {"train2014": make_split("train2014", 24, rng), "val2014": make_split("val2014", 27, rng)}
    files = {
        split: zip_bytes({f"{split}/{name}.jpg": data for name, data in images.items()})
        for split, (images, _) in splits.items()
    }
    annotations = {f"annotations/instances_{s}.json": json.dumps(d).encode() for s, (_, d) in splits.items()}
    annotations["annotations/captions_train2014.json"] = b"{}"  # the zip holds more than we keep
    files["annotations"] = zip_bytes(annotations)
    return files, splits


@pytest.fixture
def server(published, monkeypatch):
    """Serve the zips at COCO's paths; the module's Archive constants point there."""
    files, _ = published
    with serve({PATHS[k]: data for k, data in files.items()}) as served:
        point_archives(monkeypatch, served.url(""), files)
        yield served


def point_archives(monkeypatch, base: str, files: dict[str, bytes]) -> None:
    for key, constant in (("annotations", "ANNOTATIONS"), ("train2014", "TRAIN2014"), ("val2014", "VAL2014")):
        name = PATHS[key].rsplit("/", 1)[1]
        digest = f"md5:{hashlib.md5(files[key]).hexdigest()}"
        monkeypatch.setattr(coco, constant, Archive(name, f"{base}{PATHS[key]}", digest, 1))


def prepare(root: Path, *extra: str) -> None:
    run_cli(["prepare", "coco", "--root", str(root), "--quiet", *extra])


bad = one_line_error


def test_prepare_coco_end_to_end_then_lists_and_test(server, published, tmp_path, capsys, monkeypatch):
    _, splits = published
    root = tmp_path / "data"
    monkeypatch.setenv("FSSAM2_DATA", str(root))  # the data home: the fssam2 test below takes no data option
    prepare(root)
    base = root / "COCO2014"
    out = capsys.readouterr().out
    assert "COCO 2014 ready" in out and "train2014 24 images, val2014 27 images" in out
    info = json.loads((base / ".fssam2-prepared.json").read_text())
    assert info["images"] == {"train2014": 24, "val2014": 27} and info["source"] == "downloaded"
    assert set(info["archives"]) == {"annotations_trainval2014.zip", "train2014.zip", "val2014.zip"}
    assert sorted(p.name for p in base.iterdir()) == [".fssam2-prepared.json", "annotations", "train2014", "val2014"]
    assert not (base / "annotations" / "captions_train2014.json").exists()
    for split, (images, data) in splits.items():
        assert sorted(p.stem for p in (base / split).iterdir()) == sorted(images)
        for info_, i in zip(data["images"], range(3), strict=False):  # the first images' label maps
            label = read_label(base / "annotations" / split / f"{Path(info_['file_name']).stem}.png")
            assert label.shape == (info_["height"], info_["width"])
            shown = split_classes(split, i)
            assert set(np.unique(label)) == {0, *shown, (shown[0] + 1) % 80 + 1}
            assert all((label == c).sum() >= 900 for c in shown)  # polygon and RLE alike

    run_cli(["prepare", "splits", "--benchmark", "coco", "--root", str(root), "--min-pixels", "100"])
    val, by_class = fold_lists(root / "splits", "coco", "val", 0)
    assert sorted(by_class) == FOLD0 and all(len(ids) >= 2 for ids in by_class.values()) and len(val) == 24
    train, _ = fold_lists(root / "splits", "coco", "train", 0)
    assert len(train) == 12  # folds 1 and 3's images; fold 2's show a speck of a fold-0 class

    cli = run_cli([
        "test", "--config", str(TINY), "--data", "fssam2.benchmarks.CocoDataModule",
        "--data.fold", "0", "--data.test_episodes", "4",
        "--data.batch_size", "2", "--data.num_workers", "0", "--trainer.default_root_dir", str(tmp_path / "run"),
    ])  # fmt: skip
    assert 0 <= cli.trainer.callback_metrics["test/miou"] <= 100

    requests = len(server.requests)
    stamp = (base / ".fssam2-prepared.json").stat().st_mtime_ns
    capsys.readouterr()
    prepare(root)
    assert "nothing to do" in capsys.readouterr().out
    assert len(server.requests) == requests and (base / ".fssam2-prepared.json").stat().st_mtime_ns == stamp


def test_truncated_download_resumes(server, tmp_path, capsys):
    server.truncate.add(PATHS["val2014"])
    bad(capsys, ["prepare", "coco", "--root", str(tmp_path), "--quiet"], "run the same command again to resume")
    assert (tmp_path / "downloads" / "val2014.zip.part").is_file() and not (tmp_path / "COCO2014" / "val2014").exists()
    prepare(tmp_path)
    ranges = [r for p, r in server.requests if p == PATHS["val2014"]]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert (tmp_path / "COCO2014" / ".fssam2-prepared.json").is_file()


def test_wrong_checksum_is_refused_and_not_kept(server, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(coco, "VAL2014", coco.VAL2014._replace(digest="md5:" + "0" * 32))
    bad(capsys, ["prepare", "coco", "--root", str(tmp_path), "--quiet"], "expected md5:00000000")
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == [
        "annotations_trainval2014.zip",
        "train2014.zip",
    ]
    assert not (tmp_path / "COCO2014" / "val2014").exists()
    assert not (tmp_path / "COCO2014" / ".fssam2-prepared.json").exists()


def test_interrupted_extraction_restarts_cleanly(server, monkeypatch, tmp_path):
    real = coco.extract

    def killed(archive, dest, name):
        staging = real(archive, dest, name)
        if name == "train2014":
            (staging / "train2014" / "COCO_train2014_000000000009.jpg").unlink()  # killed mid-way
            raise KeyboardInterrupt
        return staging

    monkeypatch.setattr(coco, "extract", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare(tmp_path)
    base = tmp_path / "COCO2014"
    assert (base / ".extracting-train2014").is_dir() and not (base / "train2014").exists()
    monkeypatch.setattr(coco, "extract", real)
    fetched = [p for p, _ in server.requests]
    prepare(tmp_path)
    assert [p for p, _ in server.requests].count(PATHS["train2014"]) == fetched.count(PATHS["train2014"]) == 1
    assert not (base / ".extracting-train2014").exists() and len(list((base / "train2014").iterdir())) == 24
    assert (base / ".fssam2-prepared.json").is_file()


def test_offline_names_url_and_target(published, monkeypatch, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    point_archives(monkeypatch, f"http://127.0.0.1:{port}", published[0])
    url = f"http://127.0.0.1:{port}{PATHS['annotations']}"
    err = bad(capsys, ["prepare", "coco", "--root", str(tmp_path)], f"Cannot reach {url}")
    assert f"put it at {tmp_path / 'downloads' / 'annotations_trainval2014.zip'}" in err


def lab_copy(root: Path, files: dict[str, bytes]) -> Path:
    """COCO2014/ as a lab keeps it: images and instances_*.json, no label maps, no archives."""
    base = root / "COCO2014"
    for data in files.values():
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            z.extractall(base)
    (base / "annotations" / "captions_train2014.json").unlink()
    return base


def test_existing_copy_is_rendered_and_verified_without_download(published, monkeypatch, tmp_path, capsys):
    point_archives(monkeypatch, "http://127.0.0.1:9", published[0])  # nothing listens there
    base = lab_copy(tmp_path, published[0])
    prepare(tmp_path)
    out = capsys.readouterr().out
    assert "(an existing copy): downloading nothing" in out and "COCO 2014 ready" in out
    assert not (tmp_path / "downloads").exists()
    assert len(list((base / "annotations" / "val2014").glob("*.png"))) == 27
    assert json.loads((base / ".fssam2-prepared.json").read_text())["source"] == "existing copy"


def test_incomplete_copy_is_not_declared_ready(published, monkeypatch, tmp_path, capsys):
    point_archives(monkeypatch, "http://127.0.0.1:9", published[0])
    base = lab_copy(tmp_path, published[0])
    (base / "val2014" / "COCO_val2014_000000001010.jpg").unlink()
    bad(capsys, ["prepare", "coco", "--root", str(tmp_path), "--quiet"], "1 of the 27 images listed in")
    shutil.copy(base / "val2014" / "COCO_val2014_000000001009.jpg", base / "val2014" / "COCO_val2014_000000001010.jpg")
    Image.fromarray(np.full((48, 64), 81, np.uint8)).save(
        base / "annotations" / "val2014" / "COCO_val2014_000000001009.png"
    )
    bad(capsys, ["prepare", "coco", "--root", str(tmp_path), "--quiet"], "largest value 81")
    assert not (base / ".fssam2-prepared.json").exists()


def test_archives_folder_is_used_and_space_is_checked_first(server, published, monkeypatch, tmp_path, capsys):
    files, _ = published
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "val2014.zip").write_bytes(files["val2014"])
    monkeypatch.setattr(marker.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 10**5))
    err = bad(capsys, ["prepare", "coco", "--root", str(tmp_path / "data")], "GB are free")
    assert "nothing was downloaded" in err and server.requests == []
    monkeypatch.undo()
    point_archives(monkeypatch, server.url(""), files)
    prepare(tmp_path / "data", "--archives", str(keep), "--splits", "val2014")
    assert PATHS["val2014"] not in {p for p, _ in server.requests}
    assert not (tmp_path / "data" / "COCO2014" / "train2014").exists()
    capsys.readouterr()
    prepare(tmp_path / "data")  # the marker covers val2014 only: train2014 is prepared now
    assert "COCO 2014 ready" in capsys.readouterr().out
    assert (tmp_path / "data" / "COCO2014" / "train2014").is_dir()
