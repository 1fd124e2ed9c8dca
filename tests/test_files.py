"""No fssam2 command writes over a file it did not create: `fssam2.files` and the commands and
scripts that write through it (export, predict, segment, prepare splits, the experiment scripts)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from fssam2 import InputError
from fssam2.files import PARTIAL_GLOB, check_new, create, create_first_free, new_folder, replace_own, write_new
from fssam2.segment import Segmenter
from helpers import TINY, load_script, one_line_error


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# The helper.


def test_create_writes_a_new_file_whole_and_refuses_an_existing_one(tmp_path):
    path = create(tmp_path / "sub" / "a.txt", lambda tmp: tmp.write_text("new"), "--output")
    assert path.read_text() == "new"
    with pytest.raises(InputError) as err:
        create(path, lambda tmp: pytest.fail("written although the file exists"), "--output")
    assert str(err.value) == (
        f"{path} exists and fssam2 writes over no file it did not create: choose another --output, or remove it first."
    )
    assert path.read_text() == "new" and sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError, match="dangling exists"):
        check_new(link, "--output")


def test_a_file_that_appears_while_writing_is_refused_not_replaced(tmp_path):
    """The race: the name is free when checked, taken before the written file claims it."""
    target = tmp_path / "out.bin"

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"ours")
        target.write_bytes(b"theirs")  # another process, meanwhile

    with pytest.raises(InputError, match="out.bin exists and fssam2 writes over no file"):
        create(target, write, "--output")
    assert target.read_bytes() == b"theirs"
    assert not list(tmp_path.glob(PARTIAL_GLOB))  # no temporary file left behind


def test_without_hard_links_the_name_is_claimed_by_exclusive_create(tmp_path, monkeypatch):
    def no_links(*args):
        raise PermissionError("this filesystem has no hard links")

    monkeypatch.setattr(os, "link", no_links)
    path = create(tmp_path / "a.txt", lambda tmp: tmp.write_text("whole"), "--output")
    assert path.read_text() == "whole"

    def write(tmp: Path) -> None:
        tmp.write_text("ours")
        (tmp_path / "b.txt").write_text("theirs")

    with pytest.raises(InputError, match="b.txt exists"):
        create(tmp_path / "b.txt", write, "--output")
    assert (tmp_path / "b.txt").read_text() == "theirs"
    assert write_new(tmp_path / "a.txt", "second") == tmp_path / "a-1.txt"
    assert (tmp_path / "a.txt").read_text() == "whole" and not list(tmp_path.glob(PARTIAL_GLOB))


def test_write_new_takes_the_first_free_name_even_when_one_is_taken_meanwhile(tmp_path, monkeypatch):
    first = tmp_path / "test_metrics.json"
    assert write_new(first, "1") == first
    import fssam2.files as files

    real_link = os.link

    def link(src, dst):  # the next free name is taken just before this process claims it
        if Path(dst).name == "test_metrics-1.json":
            Path(dst).write_text("theirs")
        real_link(src, dst)

    monkeypatch.setattr(files.os, "link", link)
    assert write_new(first, "2") == tmp_path / "test_metrics-2.json"
    assert [first.read_text(), (tmp_path / "test_metrics-1.json").read_text()] == ["1", "theirs"]
    assert (tmp_path / "test_metrics-2.json").read_text() == "2"


def test_create_first_free_writes_any_file_beside_earlier_ones(tmp_path):
    from safetensors.torch import load_file, save_file

    (tmp_path / "adapter.safetensors").write_text("a file of the user's")
    tensors = {"w": torch.arange(3.0)}
    path = create_first_free(tmp_path / "adapter.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    assert path == tmp_path / "adapter-1.safetensors"
    assert torch.equal(load_file(path)["w"], tensors["w"])
    assert (tmp_path / "adapter.safetensors").read_text() == "a file of the user's"
    assert not list(tmp_path.glob(PARTIAL_GLOB))


def test_replace_own_and_new_folder(tmp_path):
    own = create(tmp_path / "numbers.json", lambda tmp: tmp.write_text("1"), "--json")
    replace_own(own, lambda tmp: tmp.write_text("2"))
    assert own.read_text() == "2" and not list(tmp_path.glob(PARTIAL_GLOB))
    assert new_folder(tmp_path / "runs" / "a", "--runs").is_dir()
    with pytest.raises(InputError, match="choose another --runs"):
        new_folder(tmp_path / "runs" / "a", "--runs")


# fssam2 export


def test_export_refuses_an_existing_output_before_any_work(trained_run, tmp_path, capsys):
    adapter, merged = tmp_path / "adapter.safetensors", tmp_path / "merged.pt"
    adapter.write_bytes(b"the user's file")
    before = contents(tmp_path)
    args = ["export", str(trained_run.last), "--output", str(adapter), "--merge", str(merged)]
    one_line_error(
        capsys, args, f"{adapter} exists and fssam2 writes over no file it did not create: choose another --output"
    )
    assert contents(tmp_path) == before  # the file byte for byte, and no merged model beside it


def test_export_refuses_an_existing_merge_before_writing_the_adapter(trained_run, tmp_path, capsys):
    adapter, merged = tmp_path / "adapter.safetensors", tmp_path / "merged.pt"
    merged.write_bytes(b"an earlier merge")
    before = contents(tmp_path)
    args = ["export", str(trained_run.last), "--output", str(adapter), "--merge", str(merged)]
    one_line_error(
        capsys, args, f"{merged} exists and fssam2 writes over no file it did not create: choose another --merge"
    )
    assert contents(tmp_path) == before
    same = tmp_path / "both"
    one_line_error(capsys, ["export", str(trained_run.last), "--output", str(same), "--merge", str(same)], "both name")
    assert contents(tmp_path) == before


def test_an_adapter_records_the_input_size_its_run_used(trained_run, tmp_path):
    """A run that left model.image_size unset ran at its SAM2 config's size (fssam2_tiny: 128): the
    adapter says so, and a Segmenter built from it runs at that size."""
    ckpt = torch.load(trained_run.last, map_location="cpu", weights_only=False)
    ckpt["hyper_parameters"]["image_size"] = None
    torch.save(ckpt, tmp_path / "native.ckpt")
    from fssam2.cli import run_cli

    adapter = tmp_path / "adapter.safetensors"
    run_cli(["export", str(tmp_path / "native.ckpt"), "--output", str(adapter)])
    with safe_open(str(adapter), "pt") as f:
        assert f.metadata()["image_size"] == "128"  # fssam2_tiny.yaml's (the session's run gave 64)
    seg = Segmenter.from_pretrained(adapter=adapter)
    assert seg.model.image_size == 128 and seg.model.sam2.image_size == 128
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    seg.set_support([image], [np.pad(np.ones((10, 10), bool), ((10, 20), (10, 30)))])
    assert seg.predict(image).shape == (40, 50)


# fssam2 predict


def test_predict_into_a_run_folder_with_predictions_is_refused_before_it_starts(tmp_path, capsys):
    earlier = tmp_path / "predictions" / "00000_test_0_class1.png"
    earlier.parent.mkdir()
    earlier.write_bytes(b"an earlier predict's mask")
    before = contents(tmp_path)
    one_line_error(
        capsys,
        ["predict", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"],
        f"{tmp_path / 'predictions'} exists and fssam2 writes over no file it did not create: "
        "choose another trainer.default_root_dir",
    )
    assert contents(tmp_path) == before  # no predict_config.yaml either


# fssam2 segment


def test_segment_keeps_a_support_overlay_that_appears_while_it_runs(tmp_path, capsys, monkeypatch):
    """output_plan refuses the outputs that exist when the run starts; one that appears later (a
    second run into the same folder) is kept too, and the run ends in one line naming it."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:40, 20:44] = (200, 40, 40)
    for name in ("s", "q"):
        Image.fromarray(image).save(tmp_path / f"{name}.png")
    prompt = tmp_path / "s.json"
    prompt.write_text(json.dumps({"box": [20, 16, 44, 40]}))
    out = tmp_path / "out"
    theirs = out / "s_support_overlay.png"
    real = Segmenter.set_support

    def set_support(self, *args, **kwargs):
        real(self, *args, **kwargs)
        theirs.write_bytes(b"another run's overlay")

    monkeypatch.setattr(Segmenter, "set_support", set_support)
    args = ["segment", "--sam2", "fssam2_tiny", "--support", str(tmp_path / "s.png"), str(prompt)]
    args += ["--query", str(tmp_path / "q.png"), "--output", str(out)]
    one_line_error(
        capsys, args, f"{theirs} exists and fssam2 writes over no file it did not create: choose another --output"
    )
    assert contents(out) == {"s_support_overlay.png": b"another run's overlay"}


# fssam2 prepare splits --benchmark (derived lists)


def test_derived_split_lists_keep_the_same_list_and_refuse_another(tmp_path):
    from fssam2.prepare.splits import derive_split_lists

    labels = tmp_path / "labels"
    labels.mkdir()
    for n, value in enumerate([1, 2, 1, 2]):
        Image.fromarray(np.full((8, 8), value, np.uint8)).save(labels / f"{n}.png")
    ids = {"train": ["0", "1"], "val": ["2", "3"]}

    def derive(**kwargs):
        derive_split_lists(ids, lambda i: labels / f"{i}.png", tmp_path / "out", "pascal", lambda f: [1], 2,
                           folds=(0,), min_pixels=1, progress=False, **kwargs)  # fmt: skip

    derive()
    lists = tmp_path / "out" / "pascal" / "fss_list"
    first = contents(lists)
    assert sorted(first) == [f"{s}/{n}_0.txt" for s in ("train", "val") for n in ("data_list", "sub_class_file_list")]
    derive()  # the same lists again: kept as they are
    assert contents(lists) == first
    (lists / "val" / "data_list_0.txt").write_text("mine\n")
    changed = contents(lists)
    with pytest.raises(InputError, match="data_list_0.txt exists and differs from the list derived here"):
        derive()
    assert contents(lists) == changed


# The experiment scripts refuse an existing output before the long run.


def test_the_demo_refuses_an_existing_run_folder_before_any_run(tmp_path, monkeypatch, capsys):
    demo = load_script("demo", monkeypatch)
    monkeypatch.setattr(demo, "run", lambda args: pytest.fail("a run started"))
    (tmp_path / "now").mkdir()
    (tmp_path / "now" / "demo_results.json").write_text("an earlier demo's")

    class Now:
        @staticmethod
        def now():
            return type("Stamp", (), {"strftime": lambda self, fmt: "now"})()

    monkeypatch.setattr(demo, "datetime", Now)
    with pytest.raises(SystemExit) as exit_:
        demo.main(["--runs", str(tmp_path), "--jobs", "1"])
    assert exit_.value.code == 2 and f"{tmp_path / 'now'} exists" in capsys.readouterr().err
    assert (tmp_path / "now" / "demo_results.json").read_text() == "an earlier demo's"


def test_bench_episode_refuses_an_existing_json_before_measuring(tmp_path, monkeypatch, capsys):
    bench = load_script("bench_episode", monkeypatch)
    monkeypatch.setattr(bench, "build_sam2", lambda *a, **k: pytest.fail("a model was built"))
    existing = tmp_path / "numbers.json"
    existing.write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--models", "tiny", "--json", str(existing)])
    assert exit_.value.code == 2 and f"{existing} exists" in capsys.readouterr().err
    assert existing.read_text() == "{}"


def test_reproduce_keeps_an_earlier_table(tmp_path, monkeypatch):
    reproduce = load_script("reproduce", monkeypatch)

    def run(args, in_process):  # every run "done" at once, its folder made
        Path(args[args.index("--trainer.default_root_dir") + 1]).mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(reproduce, "fssam2", run)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.md").write_text("an earlier table")
    args = ["--data-root", str(tmp_path), "--splits-dir", str(tmp_path), "--benchmarks", "fss1000", "--out", str(out)]
    reproduce.main(args)
    assert (out / "results.md").read_text() == "an earlier table"
    assert "## FSS-1000" in (out / "results-1.md").read_text()
