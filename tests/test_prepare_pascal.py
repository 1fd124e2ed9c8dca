"""`fssam2 prepare pascal` against a loopback server holding small archives generated in the member
layouts of the real VOC2012 trainval tar and SBD's benchmark.tgz: the union of label maps, VOC's
maps winning, resume, checksums, interruptions, --archives, a user's own SegmentationClassAug."""

import hashlib
import io
import json
import shutil
import socket
import tarfile
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from fssam2.benchmarks import write_png as real_write_png
from fssam2.cli import run_cli
from fssam2.downloads import Archive
from fssam2.files import temp_path
from fssam2.prepare import pascal
from fssam2.synthetic import SyntheticBenchmark
from loopback import serve

# Image ids by where they are (real ids look the same: <year>_<number>).
BOTH_TRAIN = [f"2008_{i:06d}" for i in range(1, 5)]  # VOC train and SBD: VOC's map wins
BOTH_VAL = [f"2008_{i:06d}" for i in range(5, 8)]  # VOC val and SBD train: kept out of train_aug
VOC_TRAIN = [f"2008_{i:06d}" for i in range(8, 10)]
VOC_VAL = [f"2008_{i:06d}" for i in range(10, 18)]
SBD_ONLY = [f"2009_{i:06d}" for i in range(1, 11)]
DETECTION_ONLY = ["2010_000001", "2010_000002"]  # JPEGImages only, as most of VOC2012's 17,125
SBD_TRAIN = BOTH_TRAIN[:2] + BOTH_VAL + SBD_ONLY[:6]
SBD_VAL = BOTH_TRAIN[2:] + SBD_ONLY[6:]
VOC_IDS = BOTH_TRAIN + BOTH_VAL + VOC_TRAIN + VOC_VAL
UNION = sorted(set(VOC_IDS) | set(SBD_TRAIN) | set(SBD_VAL))
TRAIN_AUG = sorted(BOTH_TRAIN + VOC_TRAIN + SBD_ONLY)
VAL = sorted(BOTH_VAL + VOC_VAL)
WIDTH, HEIGHT = 48, 36  # not square, like VOC's 500x375: a transposed map would show
VOC_PATH, SBD_PATH = f"/voc/{pascal.VOC_ARCHIVE.filename}", f"/sbd/{pascal.SBD_ARCHIVE.filename}"


def sample(index: int, top_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and label map (1..20, 255 boundaries) showing `top_class` whole, among others."""
    bench = SyntheticBenchmark(image_size=48, pool_sizes=(1, 1, 1))
    image, label = bench.render("train", index, top_class=top_class)
    size = (WIDTH, HEIGHT)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.resize(
        label, size, interpolation=cv2.INTER_NEAREST
    )


def voc_palette() -> list[int]:
    palette = []
    for i in range(256):
        r = g = b = 0
        for j in range(8):
            r |= ((i >> (3 * j)) & 1) << (7 - j)
            g |= ((i >> (3 * j + 1)) & 1) << (7 - j)
            b |= ((i >> (3 * j + 2)) & 1) << (7 - j)
        palette += [r, g, b]
    return palette


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def mat_bytes(**fields) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, fields, do_compression=True)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def generated():
    """The two archives' bytes, and the label maps each source holds."""
    voc_maps, sbd_maps, jpegs = {}, {}, {}
    for index, image_id in enumerate(sorted(set(UNION) | set(DETECTION_ONLY))):
        # Val images show fold 0's classes 1..5 twice each (a 1-shot episode needs 2 images of a
        # class); the others cycle over all 20, so every fold has training images.
        top_class = VAL.index(image_id) % 5 + 1 if image_id in VAL else index * 7 % 20 + 1
        image, label = sample(index, top_class)
        jpegs[image_id] = encode(Image.fromarray(image), "JPEG")
        voc_maps[image_id] = label  # VOC's: with its 255 boundaries
        sbd_maps[image_id] = np.where(label == 255, 0, label).astype(np.uint8)  # SBD's: none
    base = "VOCdevkit/VOC2012"
    voc = {f"{base}/JPEGImages/{i}.jpg": jpegs[i] for i in sorted(jpegs)}
    for i in VOC_IDS:
        png = Image.fromarray(voc_maps[i])
        png.putpalette(voc_palette())  # a palette PNG whose indices are the classes, as VOC's
        voc[f"{base}/SegmentationClass/{i}.png"] = encode(png, "PNG")
        voc[f"{base}/SegmentationObject/{i}.png"] = encode(png, "PNG")
    for i in jpegs:
        voc[f"{base}/Annotations/{i}.xml"] = f"<annotation><filename>{i}.jpg</filename></annotation>".encode()
    lists = {"train": sorted(BOTH_TRAIN + VOC_TRAIN), "val": VAL, "trainval": sorted(VOC_IDS)}
    for name, ids in lists.items():
        voc[f"{base}/ImageSets/Segmentation/{name}.txt"] = "".join(f"{i}\n" for i in ids).encode()
    voc[f"{base}/ImageSets/Main/train.txt"] = "".join(f"{i}\n" for i in sorted(jpegs)).encode()
    sbd = {}
    for i in sorted(set(SBD_TRAIN) | set(SBD_VAL)):
        seg = sbd_maps[i]
        boundaries = np.empty((20, 1), object)
        for c in range(20):
            boundaries[c, 0] = scipy.sparse.csc_matrix(np.zeros(seg.shape, bool))
        present = np.unique(seg[seg > 0]).astype(np.uint8)[:, None]
        gtcls = {"Segmentation": seg, "Boundaries": boundaries, "CategoriesPresent": present}
        sbd[f"benchmark_RELEASE/dataset/cls/{i}.mat"] = mat_bytes(GTcls=gtcls)
        sbd[f"benchmark_RELEASE/dataset/inst/{i}.mat"] = mat_bytes(GTinst={"Segmentation": (seg > 0).astype(np.uint8)})
        sbd[f"benchmark_RELEASE/dataset/img/{i}.jpg"] = jpegs[i]
    sbd["benchmark_RELEASE/dataset/train.txt"] = "".join(f"{i}\n" for i in SBD_TRAIN).encode()
    sbd["benchmark_RELEASE/dataset/val.txt"] = "".join(f"{i}\n" for i in SBD_VAL).encode()
    sbd["benchmark_RELEASE/benchmark_code_RELEASE/README"] = b"code"
    return {
        "voc": tar_bytes(voc, "w"),
        "sbd": tar_bytes(sbd, "w:gz"),
        "voc_maps": voc_maps,
        "sbd_maps": sbd_maps,
    }


def archives(voc_url: str, sbd_url: str, generated, voc_body: bytes | None = None) -> tuple[Archive, Archive]:
    """The module's archives with their URLs and digests replaced by the generated files'."""
    digest = {k: f"md5:{hashlib.md5(generated[k]).hexdigest()}" for k in ("voc", "sbd")}
    if voc_body is not None:
        digest["voc"] = f"md5:{hashlib.md5(voc_body).hexdigest()}"
    return (
        pascal.VOC_ARCHIVE._replace(url=voc_url, digest=digest["voc"], size_mb=1),
        pascal.SBD_ARCHIVE._replace(url=sbd_url, digest=digest["sbd"], size_mb=1),
    )


@pytest.fixture(scope="module")
def module_server(generated):
    with serve({VOC_PATH: generated["voc"], SBD_PATH: generated["sbd"]}) as served:
        yield served


@pytest.fixture
def served(module_server, generated, monkeypatch):
    """The server, with the module's archives pointing at it; requests counted from here."""
    module_server.requests.clear()
    module_server.truncate.clear()
    voc, sbd = archives(module_server.url(VOC_PATH), module_server.url(SBD_PATH), generated)
    monkeypatch.setattr(pascal, "VOC_ARCHIVE", voc)
    monkeypatch.setattr(pascal, "SBD_ARCHIVE", sbd)
    return module_server


@pytest.fixture(scope="module")
def reference(generated, tmp_path_factory):
    """A root prepared once, uninterrupted (from a server of its own: tests count their requests)."""
    root = tmp_path_factory.mktemp("reference")
    with serve({VOC_PATH: generated["voc"], SBD_PATH: generated["sbd"]}) as own, pytest.MonkeyPatch.context() as mp:
        voc, sbd = archives(own.url(VOC_PATH), own.url(SBD_PATH), generated)
        mp.setattr(pascal, "VOC_ARCHIVE", voc)
        mp.setattr(pascal, "SBD_ARCHIVE", sbd)
        prepare(root)
    return root


def prepare(root, *extra):
    return run_cli(["prepare", "pascal", "--root", str(root), *extra])


def refused(capsys, args, *messages) -> str:
    with pytest.raises(SystemExit) as exit_:
        prepare(*args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("fssam2: error:")]
    assert exit_.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for message in messages:
        assert message in lines[0], lines[0]
    return lines[0]


def tree(folder, skip=()) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def label(root, image_id) -> np.ndarray:
    with Image.open(root / "VOC2012" / "SegmentationClassAug" / f"{image_id}.png") as im:
        assert im.mode == "L"
        return np.asarray(im)


def no_leftovers(root) -> None:
    hidden = {".pascal-sbd", ".extracting-voc2012", ".extracting-sbd"}
    assert not hidden & {p.name for p in root.iterdir()}
    assert not (root / "VOC2012" / pascal.PARTIAL).exists() and not (root / "VOC2012" / pascal.EXTRACTED).exists()


def test_prepare_builds_the_union_with_vocs_maps_winning(reference, generated):
    voc = reference / "VOC2012"
    labels = sorted(p.stem for p in (voc / "SegmentationClassAug").iterdir())
    assert labels == UNION and len(UNION) == 27
    for image_id in BOTH_TRAIN + BOTH_VAL + VOC_TRAIN + VOC_VAL:  # VOC's own map, its 255 boundaries kept
        assert np.array_equal(label(reference, image_id), generated["voc_maps"][image_id])
        assert (label(reference, image_id) == 255).any()
    for image_id in SBD_ONLY:  # from SBD's .mat, no boundaries
        got = label(reference, image_id)
        assert np.array_equal(got, generated["sbd_maps"][image_id]) and got.shape == (HEIGHT, WIDTH)
        assert set(np.unique(got)) <= set(range(21)) and got.max() > 0
    aug = voc / "ImageSets" / "SegmentationAug"
    assert (aug / "train_aug.txt").read_text().split() == TRAIN_AUG
    assert (aug / "val.txt").read_text().split() == VAL
    assert (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split() == VAL
    assert len(list((voc / "JPEGImages").iterdir())) == len(UNION) + len(DETECTION_ONLY)
    assert (voc / "Annotations").is_dir() and (voc / "SegmentationObject").is_dir()  # VOC's other folders kept
    marker = json.loads((voc / pascal.MARKER).read_text())
    assert marker["label_maps"] == 27 and marker["lists"] == {"train_aug": 16, "val": 11}
    assert {a["digest"] for a in marker["archives"].values()} == {
        f"md5:{hashlib.md5(generated[k]).hexdigest()}" for k in ("voc", "sbd")
    }
    assert marker["fssam2_version"] and marker["date"]
    assert sorted(p.name for p in (reference / "downloads").iterdir()) == sorted(
        [pascal.VOC_ARCHIVE.filename, pascal.SBD_ARCHIVE.filename]
    )  # kept by default
    no_leftovers(reference)


@pytest.mark.slow
def test_prepared_data_derives_lists_and_runs_fssam2_test(reference, tmp_path, monkeypatch):
    home = tmp_path / "home"  # the data home, holding the prepared VOC2012: no --root, no data option below
    home.mkdir()
    (home / "VOC2012").symlink_to(reference / "VOC2012")
    monkeypatch.setenv("FSSAM2_DATA", str(home))
    aug = home / "VOC2012" / "ImageSets" / "SegmentationAug"
    run_cli([
        "prepare", "splits", "--benchmark", "pascal",
        "--train-ids", str(aug / "train_aug.txt"), "--val-ids", str(aug / "val.txt"), "--min-pixels", "4",
    ])  # fmt: skip
    assert (home / "splits" / "pascal" / "fss_list" / "val" / "data_list_0.txt").read_text().split()
    cli = run_cli([
        "test", "--config", str(Path(__file__).parent.parent / "configs" / "pascal_fold0.yaml"),
        "--model.sam2_config", "fssam2_tiny", "--model.sam2_checkpoint", "random", "--model.image_size", "64",
        "--data.test_episodes", "4", "--data.batch_size", "2", "--data.num_workers", "0", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
    ])  # fmt: skip
    assert 0 <= cli.trainer.callback_metrics["test/miou"] <= 100
    assert len(cli.datamodule.dataset("test")) == 4
    assert cli.datamodule.root == str(home)


def test_second_run_is_a_no_op(reference, monkeypatch, capsys, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(reference, root)
    before = {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}
    closed = "http://127.0.0.1:9/nothing-listens"
    monkeypatch.setattr(pascal, "VOC_ARCHIVE", pascal.VOC_ARCHIVE._replace(url=closed))
    monkeypatch.setattr(pascal, "SBD_ARCHIVE", pascal.SBD_ARCHIVE._replace(url=closed))
    capsys.readouterr()
    prepare(root)
    assert "already prepared" in capsys.readouterr().out
    assert {str(p): p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_a_marker_that_no_longer_matches_is_not_trusted(reference, served, capsys, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(reference, root, ignore=shutil.ignore_patterns("downloads"))
    (root / "VOC2012" / "SegmentationClassAug" / f"{VAL[0]}.png").unlink()
    refused(capsys, [root], f"ids of val.txt have no label map in {root / 'VOC2012' / 'SegmentationClassAug'}")
    assert not (root / "VOC2012" / pascal.MARKER).exists() and served.requests == []


def test_truncated_download_resumes(served, tmp_path, capsys):
    served.truncate.add(VOC_PATH)
    refused(capsys, [tmp_path], "run the same command again to resume")
    assert not (tmp_path / "VOC2012" / "SegmentationClassAug").exists()
    assert (tmp_path / "downloads" / f"{pascal.VOC_ARCHIVE.filename}.part").is_file()
    prepare(tmp_path)
    ranges = [r for p, r in served.requests if p == VOC_PATH]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert sorted(p.stem for p in (tmp_path / "VOC2012" / "SegmentationClassAug").iterdir()) == UNION


def test_wrong_checksum_is_refused_and_not_kept(served, generated, monkeypatch, tmp_path, capsys):
    voc, _ = archives(served.url(VOC_PATH), served.url(SBD_PATH), generated, voc_body=b"another file")
    monkeypatch.setattr(pascal, "VOC_ARCHIVE", voc)
    refused(capsys, [tmp_path], served.url(VOC_PATH), "it was not kept")
    assert list((tmp_path / "downloads").iterdir()) == [] and not (tmp_path / "VOC2012").exists()


class Killed(Exception):
    """Stands for the process being killed at that point."""


@pytest.mark.parametrize("where", ["extraction", "conversion", "before-marker"])
def test_an_interrupted_run_restarts_cleanly(where, served, reference, monkeypatch, tmp_path, capsys):
    real_merge = pascal.merge
    calls = []

    def merge(source, dest):  # killed while moving VOC's folders into place, the staging folder left behind
        real_merge(source / "JPEGImages", dest / "JPEGImages")
        raise Killed

    def write_png(array, path, option):  # killed halfway through the label maps, one of them written partly
        if len(calls) == 10:
            temp_path(path).write_bytes(b"half a PNG")
            raise Killed
        calls.append(path)
        real_write_png(array, path, option)

    def write_marker(*args):  # killed after SegmentationClassAug got its name, before the marker
        raise Killed

    kill = {"extraction": ("merge", merge), "conversion": ("write_png", write_png)}
    with monkeypatch.context() as mp, pytest.raises(Killed):
        mp.setattr(pascal, *kill.get(where, ("write_marker", write_marker)))
        prepare(tmp_path)
    assert not (tmp_path / "VOC2012" / pascal.MARKER).exists()
    if where == "conversion":
        assert not (tmp_path / "VOC2012" / "SegmentationClassAug").exists()
        assert len(list((tmp_path / "VOC2012" / pascal.PARTIAL).glob("2*.png"))) == 10
    if where == "extraction":
        assert (tmp_path / ".extracting-voc2012").is_dir() and (tmp_path / "VOC2012" / "JPEGImages").is_dir()
    capsys.readouterr()
    prepare(tmp_path)
    out = capsys.readouterr().out
    assert ("exists without fssam2's marker" in out) == (where == "before-marker")
    skip = (pascal.MARKER,)
    assert tree(tmp_path / "VOC2012", skip) == tree(reference / "VOC2012", skip)
    marker, expected = (json.loads((r / "VOC2012" / pascal.MARKER).read_text()) for r in (tmp_path, reference))
    for key in ("label_maps", "lists"):
        assert marker[key] == expected[key]
    assert {k: v["digest"] for k, v in marker["archives"].items()} == {
        k: v["digest"] for k, v in expected["archives"].items()
    }
    no_leftovers(tmp_path)


def test_offline_error_names_the_url_and_the_target(served, monkeypatch, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/{pascal.VOC_ARCHIVE.filename}"  # closed once the block ends
    monkeypatch.setattr(pascal, "VOC_ARCHIVE", pascal.VOC_ARCHIVE._replace(url=url))
    refused(
        capsys, [tmp_path], f"Cannot reach {url}", f"put it at {tmp_path / 'downloads' / pascal.VOC_ARCHIVE.filename}"
    )


def test_archives_folder_is_used_in_place_without_a_request(served, generated, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / pascal.VOC_ARCHIVE.filename).write_bytes(generated["voc"])
    (folder / pascal.SBD_ARCHIVE.filename).write_bytes(generated["sbd"])
    prepare(tmp_path / "root", "--archives", str(folder), "--no-keep-archives")
    assert served.requests == []
    assert sorted(p.stem for p in (tmp_path / "root" / "VOC2012" / "SegmentationClassAug").iterdir()) == UNION
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [pascal.VOC_ARCHIVE.filename, pascal.SBD_ARCHIVE.filename]
    )


def test_mirror_replaces_the_official_hosts(generated, monkeypatch, tmp_path):
    files = {
        f"/mirror/{pascal.VOC_ARCHIVE.filename}": generated["voc"],
        f"/mirror/{pascal.SBD_ARCHIVE.filename}": generated["sbd"],
    }
    with serve(files) as mirror:
        closed = "http://127.0.0.1:9/official"  # nothing listens there
        for name, archive in zip(("VOC_ARCHIVE", "SBD_ARCHIVE"), archives(closed, closed, generated), strict=True):
            monkeypatch.setattr(pascal, name, archive)
        prepare(tmp_path, "--mirror", mirror.url("/mirror/"))
        assert sorted(p for p, _ in mirror.requests) == sorted(files)
    assert (tmp_path / "VOC2012" / pascal.MARKER).is_file()


def test_no_keep_archives_deletes_the_downloads_after_success(served, tmp_path):
    prepare(tmp_path, "--no-keep-archives")
    assert list((tmp_path / "downloads").iterdir()) == []
    assert (tmp_path / "VOC2012" / pascal.MARKER).is_file()


def test_a_users_segmentationclassaug_is_checked_not_replaced(served, reference, tmp_path, capsys):
    labels = tmp_path / "VOC2012" / "SegmentationClassAug"
    shutil.copytree(reference / "VOC2012" / "SegmentationClassAug", labels)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in labels.iterdir()}
    capsys.readouterr()
    prepare(tmp_path)
    out = capsys.readouterr().out
    assert "exists without fssam2's marker" in out and f"found {len(UNION)} label maps" in out
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in labels.iterdir()} == before
    assert [p for p, _ in served.requests] == [VOC_PATH]  # its images, not SBD
    aug = tmp_path / "VOC2012" / "ImageSets" / "SegmentationAug"
    assert (aug / "train_aug.txt").read_text().split() == TRAIN_AUG
    marker = json.loads((tmp_path / "VOC2012" / pascal.MARKER).read_text())
    assert marker["label_maps"] == len(UNION) and "checked (not built here)" in marker["label_maps_from"]


@pytest.mark.parametrize("damage", ["value", "rgb", "size", "missing"])
def test_an_inconsistent_segmentationclassaug_is_refused_untouched(damage, served, reference, tmp_path, capsys):
    shutil.copytree(reference / "VOC2012", tmp_path / "VOC2012")
    (tmp_path / "VOC2012" / pascal.MARKER).unlink()
    path = tmp_path / "VOC2012" / "SegmentationClassAug" / f"{SBD_ONLY[0]}.png"
    if damage == "value":
        Image.fromarray(np.full((HEIGHT, WIDTH), 30, np.uint8)).save(path)
    elif damage == "rgb":
        Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(path)
    elif damage == "size":
        Image.fromarray(np.zeros((WIDTH, HEIGHT), np.uint8)).save(path)
    else:
        path = tmp_path / "VOC2012" / "SegmentationClassAug" / f"{VAL[-1]}.png"
        path.unlink()
    before = tree(tmp_path / "VOC2012")
    message = {"value": "values [30]", "rgb": "is a RGB image", "size": "is 36x48", "missing": "no label map"}[damage]
    refused(capsys, [tmp_path], message, "move")
    assert tree(tmp_path / "VOC2012") == before and served.requests == []


def test_not_enough_space_is_refused_before_any_download(served, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(
        pascal.shutil, "disk_usage", lambda path: SimpleNamespace(total=10**12, used=10**12, free=10**5)
    )
    refused(capsys, [tmp_path], "Not enough space", "GB are free")
    assert served.requests == []
