"""`fssam2 prepare fss1000` with a generated fewshot_data.zip in HSNet's nesting: the manual step
when it is absent, a folder of archives, a mirror, the pinned digest and its override, the
verification, then `fssam2 test` on the prepared FSS-1000."""

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from fssam2.cli import run_cli
from fssam2.prepare import fss1000
from fssam2.synthetic import SyntheticBenchmark, write_fss_layout
from helpers import one_line_error
from loopback import serve

NAMES = {split: [f"{split}_cat{k}" for k in range(2)] for split in ("train", "val", "test")}
TINY = Path(__file__).parent / "configs" / "tiny.yaml"


def fewshot_zip(source: Path, top: str = "fewshot_data/fewshot_data", drop: str | None = None) -> bytes:
    """The category folders under `source` zipped under `top/` (HSNet's: fewshot_data/fewshot_data),
    with macOS resource forks beside them as such zips often carry; `drop` leaves a member out."""
    buffer = io.BytesIO()

    def put(name: str, data: bytes) -> None:  # a fixed timestamp: two calls give the same bytes
        z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)

    with zipfile.ZipFile(buffer, "w") as z:
        prefix = f"{top}/" if top else ""
        if top:
            put(f"{top.split('/')[0]}/README.txt", b"FSS-1000")
        for path in sorted(source.rglob("*.*")):
            member = f"{prefix}{path.relative_to(source).as_posix()}"
            if drop and member.endswith(drop):
                continue
            put(member, path.read_bytes())
            put(f"__MACOSX/{prefix}{path.parent.name}/._{path.name}", b"\0\5\26\7")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def categories(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fss")
    write_fss_layout(root, SyntheticBenchmark(image_size=64), NAMES)
    return root / "FSS-1000"


@pytest.fixture
def pinned_to(monkeypatch):
    """Pin the module's archive to given bytes (as if they were the published file)."""

    def pin(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        monkeypatch.setattr(fss1000, "ARCHIVE", fss1000.ARCHIVE._replace(digest=f"sha256:{digest}"))
        return digest

    return pin


def write_lists(root: Path, names=NAMES) -> Path:
    folder = root / "splits" / "fss"
    folder.mkdir(parents=True)
    for split, file in (("train", "trn.txt"), ("val", "val.txt"), ("test", "test.txt")):
        (folder / file).write_text("\n".join(names[split]) + "\n")
    return root / "splits"


bad = one_line_error


def test_absent_archive_prints_the_manual_step(tmp_path, capsys):
    root = tmp_path / "data"
    err = bad(capsys, ["prepare", "fss1000", "--root", str(root)], fss1000.DRIVE_URL)
    assert fss1000.DRIVE_URL == "https://drive.google.com/file/d/16TgqOeI_0P41Eh3jWQlxlRXG9KIqtMgI/view"
    for part in ("fewshot_data.zip", f"put it in {root / 'downloads'}", f"`fssam2 prepare fss1000 --root {root}`"):
        assert part in err
    assert not root.exists() or not any(root.iterdir())


def test_archive_in_a_folder_is_prepared_then_tested(categories, pinned_to, tmp_path, capsys, monkeypatch):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "fewshot_data.zip").write_bytes(fewshot_zip(categories))
    pinned_to((keep / "fewshot_data.zip").read_bytes())
    root = tmp_path / "data"
    monkeypatch.setenv("FSSAM2_DATA", str(root))  # the data home: no --root, no data option below
    write_lists(root)
    run_cli(["prepare", "fss1000", "--archives", str(keep), "--quiet"])
    base = root / "FSS-1000"
    assert sorted(p.name for p in base.iterdir()) == [".fssam2-prepared.json", *sorted(sum(NAMES.values(), []))]
    assert sorted(p.name for p in (base / "test_cat1").iterdir()) == sorted(
        f"{n}.{ext}" for n in range(1, 11) for ext in ("jpg", "png")
    )
    assert sorted(p.name for p in root.iterdir()) == ["FSS-1000", "splits"]  # no staging left, nothing copied
    info = json.loads((base / ".fssam2-prepared.json").read_text())
    assert info["categories"] == 6 and info["checked"] == 6 and "split lists" in info["checked_against"]
    assert "FSS-1000 ready" in capsys.readouterr().out

    cli = run_cli([
        "test", "--config", str(TINY), "--data", "fssam2.benchmarks.FSS1000DataModule",
        "--data.batch_size", "4", "--data.num_workers", "0",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    ])  # fmt: skip
    assert len(cli.datamodule.dataset("test")) == 20  # every test image once
    assert 0 <= cli.trainer.callback_metrics["test/miou"] <= 100

    run_cli(["prepare", "fss1000", "--root", str(root)])  # the archive need not be there any more
    assert "nothing to do" in capsys.readouterr().out


def test_wrong_digest_is_refused_and_sha256_overrides(categories, tmp_path, capsys):
    data = fewshot_zip(categories)
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "fewshot_data.zip").write_bytes(data)
    actual = hashlib.sha256(data).hexdigest()
    err = bad(
        capsys, ["prepare", "fss1000", "--root", str(tmp_path)], f"has sha256:{actual}, not the pinned sha256:4e49"
    )
    assert "third party's" in err and f"run again with --sha256 {actual}" in err
    assert (tmp_path / "downloads" / "fewshot_data.zip").read_bytes() == data  # the user's file is kept
    assert not (tmp_path / "FSS-1000").exists()
    bad(capsys, ["prepare", "fss1000", "--root", str(tmp_path), "--sha256", "ab" * 32], "given with --sha256")
    run_cli(["prepare", "fss1000", "--root", str(tmp_path), "--sha256", actual.upper(), "--quiet"])
    info = json.loads((tmp_path / "FSS-1000" / ".fssam2-prepared.json").read_text())
    assert info["archive"]["digest"] == f"sha256:{actual}" and info["archive"]["pinned_by"] == "--sha256"
    assert "every category folder" in info["checked_against"]


def test_pinned_archive_must_hold_the_1000_categories(categories, pinned_to, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(fss1000, "PINNED_SHA256", pinned_to(fewshot_zip(categories)))
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "fewshot_data.zip").write_bytes(fewshot_zip(categories))
    bad(capsys, ["prepare", "fss1000", "--root", str(tmp_path), "--quiet"], "holds 6 category folders, not the 1000")
    assert not (tmp_path / "FSS-1000" / ".fssam2-prepared.json").exists()


@pytest.mark.parametrize("top", ["", "a/b/c"])
def test_mirror_and_other_nestings(categories, pinned_to, tmp_path, capsys, top):
    data = fewshot_zip(categories, top)
    pinned_to(data)
    with serve({"/fss/fewshot_data.zip": data, "/bad/fewshot_data.zip": data[:-1] + b"!"}) as served:
        err = bad(
            capsys,
            ["prepare", "fss1000", "--root", str(tmp_path), "--mirror", served.url("/bad"), "--quiet"],
            "was not kept",
        )
        assert served.url("/bad/fewshot_data.zip") in err
        assert list((tmp_path / "downloads").iterdir()) == []
        run_cli(["prepare", "fss1000", "--root", str(tmp_path), "--mirror", served.url("/fss/"), "--quiet"])
    assert (tmp_path / "FSS-1000" / "val_cat0" / "10.png").is_file()
    assert (tmp_path / "downloads" / "fewshot_data.zip").read_bytes() == data


def test_incomplete_categories_are_not_declared_ready(categories, pinned_to, tmp_path, capsys):
    (tmp_path / "downloads").mkdir()
    data = fewshot_zip(categories, drop="test_cat1/7.png")
    (tmp_path / "downloads" / "fewshot_data.zip").write_bytes(data)
    pinned_to(data)
    write_lists(tmp_path, {**NAMES, "test": ["test_cat0", "test_cat1", "test_cat9"]})
    bad(capsys, ["prepare", "fss1000", "--root", str(tmp_path), "--quiet"], "1 categories listed in")
    (tmp_path / "splits" / "fss" / "test.txt").write_text("test_cat0\ntest_cat1\n")
    bad(capsys, ["prepare", "fss1000", "--root", str(tmp_path), "--quiet"], "e.g. test_cat1 lacks ['7.png']")
    assert not (tmp_path / "FSS-1000" / ".fssam2-prepared.json").exists()
