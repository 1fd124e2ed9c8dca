"""Your own images: `fssam2 export`, adapter files, the Segmenter API and `fssam2 segment`."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from fssam2 import FewShotSAM2, InputError, build_sam2
from fssam2.cli import run_cli
from fssam2.segment import Segmenter
from fssam2.synthetic import SyntheticBenchmark
from helpers import one_line_error


@pytest.fixture(scope="module")
def trained(trained_run, tmp_path_factory):
    """The session's LoRA fit of the tiny model on a saved base checkpoint (conftest), and its exported files."""
    root = tmp_path_factory.mktemp("trained")
    ckpt = trained_run.last
    run_cli(["export", str(ckpt), "--output", str(root / "adapter.safetensors"), "--merge", str(root / "merged.pt")])
    return root, trained_run.base, trained_run.model()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Supports (image + mask of class 3) and queries, as files."""
    folder = tmp_path_factory.mktemp("images")
    bench = SyntheticBenchmark(image_size=80)
    (folder / "support").mkdir()
    (folder / "query").mkdir()
    for i in range(2):
        image, label = bench.render("test", i, top_class=3)
        Image.fromarray(image).save(folder / "support" / f"s{i}.jpg")
        Image.fromarray(np.where(label == 3, 255, 0).astype(np.uint8)).save(folder / "support" / f"s{i}.png")
    for i in range(3):
        image, _ = bench.render("test", 10 + i, top_class=3)
        Image.fromarray(image[: 70 - 5 * i]).save(folder / "query" / f"q{i}.jpg")  # various sizes
    return folder


def test_adapter_file_holds_lora_and_metadata(trained):
    root, base, model = trained
    path = root / "adapter.safetensors"
    assert path.stat().st_size < 4e6
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert keys == {k for k, _ in model.named_parameters() if k.endswith(("lora_A", "lora_B"))}
    from fssam2.hub import sha256_of

    assert meta["base_model"] == "fssam2_tiny" and meta["base_sha256"] == sha256_of(base)
    assert json.loads(meta["lora"])["memory_attention_rank"] == 32 and meta["image_size"] == "64"
    assert (meta["dataset"], meta["fold"], meta["shot"]) == ("SyntheticDataModule", "0", "1")
    assert 0 <= float(meta["best_val_miou"]) <= 100


def test_adapter_reloads_to_the_trained_model_and_merged_equals_unmerged(trained, images):
    root, base, model = trained
    seg = Segmenter.from_pretrained("fssam2_tiny", root / "adapter.safetensors", sam2_checkpoint=base)
    merged = Segmenter(FewShotSAM2(build_sam2("fssam2_tiny", root / "merged.pt", image_size=64)))
    support = [np.asarray(Image.open(images / "support" / f"s{i}.{e}")) for i in range(2) for e in ("jpg",)]
    masks = [np.asarray(Image.open(images / "support" / f"s{i}.png")) for i in range(2)]
    for s in (seg, merged):
        s.set_support(support, masks)
    query = np.asarray(Image.open(images / "query" / "q0.jpg"))
    trained_seg = Segmenter(model)
    trained_seg.set_support(support, masks)
    torch.testing.assert_close(seg.logits(query), trained_seg.logits(query))
    torch.testing.assert_close(merged.logits(query), seg.logits(query), atol=1e-4, rtol=1e-4)
    assert np.array_equal(merged.predict(query), seg.predict(query))
    assert seg.predict(query).shape == query.shape[:2]


def test_cli_segment_writes_the_api_masks(trained, images, tmp_path, capsys):
    root, base, _ = trained
    out = tmp_path / "out"
    run_cli([
        "segment", "--support", str(images / "support" / "s0.jpg"), str(images / "support" / "s0.png"),
        "--support", str(images / "support" / "s1.jpg"), str(images / "support" / "s1.png"),
        "--query", str(images / "query"), "--output", str(out), "--sam2", "fssam2_tiny",
        "--sam2-checkpoint", str(base), "--adapter", str(root / "adapter.safetensors"), "--device", "cpu",
    ])  # fmt: skip
    assert f"wrote 3 masks and overlays to {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [f"q{i}{s}.png" for i in range(3) for s in ("", "_overlay")]
    seg = Segmenter.from_pretrained("fssam2_tiny", root / "adapter.safetensors", sam2_checkpoint=base)
    seg.set_support(
        [np.asarray(Image.open(images / "support" / f"s{i}.jpg")) for i in range(2)],
        [np.asarray(Image.open(images / "support" / f"s{i}.png")) for i in range(2)],
    )
    for i in range(3):
        query = np.asarray(Image.open(images / "query" / f"q{i}.jpg"))
        written = np.asarray(Image.open(out / f"q{i}.png"))
        assert written.shape == query.shape[:2] and set(np.unique(written)) <= {0, 255}
        assert np.array_equal(written == 255, seg.predict(query))
        assert np.asarray(Image.open(out / f"q{i}_overlay.png")).shape == query.shape
    run_cli(["segment", "--support", str(images / "support"), "--query", str(images / "query" / "q1.jpg"),
             "--output", str(tmp_path / "folder"), "--sam2", "fssam2_tiny", "--sam2-checkpoint", str(base)])  # fmt: skip
    assert (tmp_path / "folder" / "q1.png").is_file()


def segment_error(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        run_cli(["segment", "--sam2", "fssam2_tiny", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err, err


def test_segment_bad_input(trained, images, tmp_path, capsys):
    root, base, _ = trained
    s0, m0, q = images / "support" / "s0.jpg", images / "support" / "s0.png", images / "query"
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((80, 80), np.uint8)).save(empty)
    small = tmp_path / "small.png"
    Image.fromarray(np.full((40, 80), 255, np.uint8)).save(small)
    junk = tmp_path / "junk.jpg"
    junk.write_text("not an image")
    (tmp_path / "none").mkdir()
    out = ["--output", str(tmp_path / "o")]
    segment_error(capsys, ["--support", str(s0), str(empty), "--query", str(q), *out], "has no foreground")
    segment_error(
        capsys, ["--support", str(s0), str(small), "--query", str(q), *out], "is 80x40 but the image is 80x80"
    )
    segment_error(capsys, ["--support", str(junk), str(m0), "--query", str(q), *out], "junk.jpg is unreadable")
    segment_error(capsys, ["--support", str(s0), str(m0), "--query", str(tmp_path / "none"), *out], "holds no image")
    segment_error(capsys, ["--support", str(s0), str(m0), "--query", str(q), "--output", str(m0)], "cannot be written")
    segment_error(
        capsys,
        ["--support", str(s0), str(m0), "--query", str(q), *out, "--adapter", str(junk)],
        "corrupt or not a safetensors",
    )
    not_adapter = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(not_adapter))
    segment_error(
        capsys,
        ["--support", str(s0), str(m0), "--query", str(q), *out, "--adapter", str(not_adapter)],
        "is not an fssam2 adapter",
    )
    adapter = str(root / "adapter.safetensors")
    segment_error(
        capsys, ["--support", str(s0), str(m0), "--query", str(q), *out, "--adapter", adapter], "weights with SHA-256"
    )
    with pytest.raises(SystemExit):
        run_cli(
            [
                "segment",
                "--sam2",
                "sam2.1_hiera_t",
                "--support",
                str(s0),
                str(m0),
                "--query",
                str(q),
                *out,
                "--adapter",
                adapter,
            ]
        )
    assert "was trained on fssam2_tiny, not sam2.1_hiera_t" in capsys.readouterr().err
    segment_error(
        capsys,
        ["--support", str(s0), str(m0), "--query", str(q), *out, "--sam2", "sam3"],
        "'sam3' is neither a packaged config",
    )
    assert not list((tmp_path / "o").glob("*.png"))  # nothing half-written


def test_export_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli(["export", str(tmp_path / "nope.ckpt"), "--output", str(tmp_path / "a.safetensors")])
    assert "nope.ckpt does not exist" in capsys.readouterr().err
    with pytest.raises(InputError, match="needs --output"):
        from fssam2.cli.commands import export_command

        export_command([str(tmp_path / "nope.ckpt")])


@pytest.mark.slow
def test_a_b_plus_adapter_is_under_4_mb(tmp_path):
    from safetensors.torch import save_file

    from fssam2 import LoRAConfig, lora_state_dict

    model = FewShotSAM2(build_sam2("sam2.1_hiera_b+"), LoRAConfig())
    path = tmp_path / "bplus.safetensors"
    save_file(lora_state_dict(model), str(path))
    assert path.stat().st_size < 4_000_000


# nothing lost, nothing silently wrong
@pytest.fixture
def own(images, tmp_path):
    """A writable copy of the support pairs and queries."""
    import shutil

    shutil.copytree(images / "support", tmp_path / "support")
    shutil.copytree(images / "query", tmp_path / "query")
    return tmp_path


def contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_outputs_never_replace_an_input_or_each_other(own):
    from fssam2.segment import image_files, output_plan, support_pairs

    support, query = own / "support", own / "query"
    Image.open(query / "q0.jpg").save(query / "scan.png")  # a PNG query, no photo beside it
    before = contents(own)
    pairs = support_pairs([[str(support)]])
    queries = image_files([str(query)], "Query")
    with pytest.raises(InputError, match=r"output .*scan\.png of query .*scan\.png would overwrite the input"):
        output_plan(pairs, queries, query)  # --output = the query folder
    (own / "more").mkdir()
    Image.open(query / "q1.jpg").save(own / "more" / "s0.jpg")
    with pytest.raises(InputError, match=r"would overwrite the input .*support[/\\]s0\.png"):
        output_plan(pairs, image_files([str(own / "more")], "Query"), support)  # --output = the support folder
    Image.open(query / "q1.jpg").save(own / "more" / "q0.jpg")
    with pytest.raises(
        InputError, match=r"Queries .*query[/\\]q0\.jpg and .*more[/\\]q0\.jpg would both be written to"
    ):
        output_plan(pairs, image_files([str(query), str(own / "more")], "Query"), own / "out")
    assert contents(own) == before
    plan = output_plan(pairs, [*queries, query / "q0.jpg"], own / "out")  # a file given twice is segmented once
    assert len(plan) == len(queries) == 4
    assert [(q.name, m.name, o.name) for q, m, o in plan][-1] == ("scan.png", "scan.png", "scan_overlay.png")


def test_a_query_folder_of_pairs_segments_the_images_not_the_masks(own, tmp_path, capsys):
    from fssam2.segment import image_files

    assert [p.name for p in image_files([str(own / "support")], "Query")] == ["s0.jpg", "s1.jpg"]
    (own / "support" / "._s0.jpg").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    out = tmp_path / "out"
    run_cli(["segment", "--sam2", "fssam2_tiny", "--support", str(own / "support" / "s0.jpg"),
             str(own / "support" / "s0.png"), "--query", str(own / "support"), "--output", str(out)])  # fmt: skip
    assert f"wrote 2 masks and overlays to {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["s0.png", "s0_overlay.png", "s1.png", "s1_overlay.png"]


def test_a_query_that_is_not_an_image_is_skipped_and_named(own, tmp_path):
    import io

    from fssam2.segment import output_plan, write_masks

    junk = own / "query" / "notes.jpg"
    junk.write_text("not an image")
    seg = Segmenter(FewShotSAM2(build_sam2("fssam2_tiny")))
    seg.set_support(
        [np.asarray(Image.open(own / "support" / "s0.jpg"))], [np.asarray(Image.open(own / "support" / "s0.png"))]
    )
    queries = [own / "query" / n for n in ("q0.jpg", "notes.jpg", "q1.jpg")]
    log = io.StringIO()
    (tmp_path / "out").mkdir()
    with pytest.raises(
        InputError, match=r"1 of 3 queries are not readable images and were skipped \(.*notes\.jpg\); the other 2"
    ):
        write_masks(seg, output_plan([], queries, tmp_path / "out"), log=log)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"q{i}{s}.png" for i in (0, 1) for s in ("", "_overlay")
    ]
    assert log.getvalue().count("\n") == 1 and "skipped query" in log.getvalue() and "notes.jpg" in log.getvalue()


def test_cli_segment_refuses_to_overwrite_a_support_mask(own, capsys):
    (own / "more").mkdir()
    Image.open(own / "query" / "q1.jpg").save(own / "more" / "s0.jpg")
    before = contents(own)
    segment_error(
        capsys,
        ["--support", str(own / "support"), "--query", str(own / "more"), "--output", str(own / "support")],
        "would overwrite the input",
    )
    assert contents(own) == before


def test_cli_segment_skips_a_query_that_is_not_an_image(own, tmp_path, capsys):
    (own / "query" / "notes.jpg").write_text("not an image")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        run_cli(["segment", "--sam2", "fssam2_tiny", "--support", str(own / "support"), "--query",
                 str(own / "query"), "--output", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "skipped query" in err and "notes.jpg" in err, err
    assert sorted(p.name for p in out.iterdir()) == [f"q{i}{s}.png" for i in range(3) for s in ("", "_overlay")]


def test_cli_segment_never_writes_over_the_annotations_beside_the_queries(own, capsys):
    labelled = own / "labelled"  # photos with their annotation <n>.png, e.g. a test set to compare with
    labelled.mkdir()
    for i in range(2):
        Image.open(own / "query" / f"q{i}.jpg").save(labelled / f"{i}.jpg")
        Image.fromarray(np.full((70 - 5 * i, 80), 255 * (i % 2), np.uint8)).save(labelled / f"{i}.png")
    before = contents(own)
    support = ["--support", str(own / "support" / "s0.jpg"), str(own / "support" / "s0.png")]
    one_line_error(
        capsys,
        ["segment", "--sam2", "fssam2_tiny", *support, "--query", str(labelled), "--output", str(labelled)],
        f"2 of the 4 outputs exist already, e.g. {labelled / '0.png'} (for query {labelled / '0.jpg'})",
    )
    assert contents(own) == before


def test_cli_segment_outputs_never_become_inputs_of_a_later_run(own, capsys):
    support = ["--support", str(own / "support")]
    before = contents(own)
    # masks beside the photos would be read as queries (q0_overlay.png) or masks by the next run
    one_line_error(
        capsys,
        ["segment", "--sam2", "fssam2_tiny", *support, "--query", str(own / "query"), "--output", str(own / "query")],
        f"--output {own / 'query'} holds the input {own / 'query'}",
    )
    assert contents(own) == before
    out = own / "out"
    run = ["segment", "--sam2", "fssam2_tiny", *support, "--query", str(own / "query"), "--output", str(out)]
    run_cli(run)
    assert f"wrote 3 masks and overlays to {out}" in capsys.readouterr().out
    first = contents(out)
    assert sorted(first) == [f"q{i}{s}.png" for i in range(3) for s in ("", "_overlay")]
    one_line_error(capsys, run, f"6 of the 6 outputs exist already, e.g. {out / 'q0.png'}")  # the same run again
    assert contents(out) == first


def test_cli_segment_with_an_adapter_alone_uses_its_recorded_base(trained, images, tmp_path, capsys):
    root, base, _ = trained
    adapter = root / "adapter.safetensors"
    out = tmp_path / "out"
    support = ["--support", str(images / "support")]
    run_cli(["segment", *support, "--query", str(images / "query"), "--output", str(out), "--adapter", str(adapter)])
    assert f"wrote 3 masks and overlays to {out}" in capsys.readouterr().out
    seg = Segmenter.from_pretrained("fssam2_tiny", adapter, sam2_checkpoint=base)
    seg.set_support(
        [np.asarray(Image.open(images / "support" / f"s{i}.jpg")) for i in range(2)],
        [np.asarray(Image.open(images / "support" / f"s{i}.png")) for i in range(2)],
    )
    query = np.asarray(Image.open(images / "query" / "q0.jpg"))
    assert np.array_equal(np.asarray(Image.open(out / "q0.png")) == 255, seg.predict(query))

    with safe_open(str(adapter), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    assert meta["base_checkpoint"] == str(base.resolve())
    from safetensors.torch import save_file

    def variant(name, **changes):
        path = tmp_path / name
        save_file(tensors, str(path), metadata={k: v for k, v in {**meta, **changes}.items() if v is not None})
        return ["segment", *support, "--query", str(images / "query"), "--output", str(tmp_path / f"{name}-out"),
                "--adapter", str(path)]  # fmt: skip

    moved = str(tmp_path / "elsewhere" / "base.pt")
    one_line_error(
        capsys, variant("moved.safetensors", base_checkpoint=moved), f"SAM2 checkpoint {moved} does not exist"
    )
    one_line_error(
        capsys,
        variant("old.safetensors", base_checkpoint=None),  # exported before the checkpoint was recorded
        "records its base fssam2_tiny but not the checkpoint file (SHA-256",
    )
    assert not list(tmp_path.glob("moved.safetensors-out/*")) and not list(tmp_path.glob("old.safetensors-out/*"))
    run_cli(variant("random.safetensors", base_checkpoint=None, base_sha256="random-init"))  # old, on random weights
    assert (tmp_path / "random.safetensors-out" / "q0.png").is_file()


def test_an_output_that_appears_while_segmenting_is_not_written_over(own, tmp_path):
    from fssam2.segment import output_plan, write_masks

    seg = Segmenter(FewShotSAM2(build_sam2("fssam2_tiny")))
    seg.set_support(
        [np.asarray(Image.open(own / "support" / "s0.jpg"))], [np.asarray(Image.open(own / "support" / "s0.png"))]
    )
    out = tmp_path / "out"
    plan = output_plan([], [own / "query" / "q0.jpg", own / "query" / "q1.jpg"], out)
    out.mkdir()
    (out / "q1_overlay.png").write_bytes(b"another run's")  # e.g. a second run into the same folder
    with pytest.raises(
        InputError, match=r"q1_overlay\.png exists and fssam2 writes over no file .*: choose another --output"
    ):
        write_masks(seg, plan)
    assert (out / "q1_overlay.png").read_bytes() == b"another run's" and not (out / "q1.png").exists()
