"""`fssam2 doctor`: one line per check, exit status 1 when what the run needs is missing."""

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from fssam2.cli import run_cli
from helpers import TESTS, one_line_error
from test_benchmarks import CONFIGS, generated  # noqa: F401 - the generated datasets and their lists

TINY = str(TESTS / "configs" / "tiny.yaml")
GiB = 2**30


def doctor(capsys, *args):
    """(exit status, stdout lines) of `fssam2 doctor ARGS`."""
    try:
        run_cli(["doctor", *args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().out.splitlines()


def line(lines, topic, *words):
    """The one line of `topic` (its second column) holding every word."""
    found = [ln for ln in lines if ln.split()[1:2] == [topic] and all(w in ln for w in words)]
    assert len(found) == 1, (topic, words, lines)
    return found[0]


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """An empty data home and SAM2 cache; neither exists yet."""
    monkeypatch.setenv("FSSAM2_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FSSAM2_HOME", str(tmp_path / "cache"))
    return tmp_path / "data", tmp_path / "cache"


def link_home(home, root, *names):
    """A data home holding `names` of the generated root (VOC2012, COCO2014, FSS-1000, splits) as links."""
    home.mkdir(parents=True, exist_ok=True)
    for name in names:
        (home / name).symlink_to(root / name)


def test_doctor_without_a_config_names_what_is_missing_as_information(homes, capsys):
    data, cache = homes
    code, lines = doctor(capsys)
    assert code == 0 and lines[-1] == "fssam2 doctor: ready", lines  # no run asked for any benchmark
    versions = line(lines, "versions")
    for name in ("python", "torch", "torchvision", "sam2", "lightning", "fssam2"):
        assert f"{name} " in versions
    if not torch.cuda.is_available():
        assert line(lines, "device").startswith("ok") and "no GPU: CPU only (" in line(lines, "device")
    assert f"data home {data} ($FSSAM2_DATA)" in line(lines, "data", "data home")
    for name, missing, command in (
        ("PASCAL-5i", data / "VOC2012" / "JPEGImages", "pascal"),
        ("COCO-20i", data / "COCO2014" / "train2014", "coco"),
        ("FSS-1000", data / "FSS-1000", "fss1000"),
    ):
        assert line(lines, "data", f"{name} is not prepared").startswith("--")
        assert f"{missing} is missing; run `fssam2 prepare {command}`" in line(lines, "data", name)
        lists = line(lines, "splits", f"{name} split lists are not prepared")
        assert lists.startswith("--") and "run `fssam2 prepare splits`" in lists
    assert not [ln for ln in lines if ln.startswith("FAIL")]
    weights = line(lines, "weights")
    assert weights.startswith("warn") and "sam2.1_hiera_b+: not cached" in weights and "fssam2 download" in weights
    # named in the order fssam2 download tries them: the Hub first, then Meta's URL
    hub_at, meta_at = (
        weights.find("Hugging Face Hub (facebook/sam2.1-hiera-base-plus"),
        weights.find("dl.fbaipublicfiles"),
    )
    assert 0 < hub_at < meta_at, weights
    assert "GiB free" in line(lines, "disk", "data home") and "GiB free" in line(lines, "disk", "run folder")
    assert not data.exists() and not cache.exists()  # nothing written


def test_doctor_passes_once_the_data_is_there(generated, homes, capsys):  # noqa: F811
    root, _ = generated
    data, _ = homes
    link_home(data, root, "COCO2014", "FSS-1000", "splits")
    (data / "VOC2012").mkdir()
    for name in ("JPEGImages", "SegmentationClassAug"):
        (data / "VOC2012" / name).symlink_to(root / "VOC2012" / name)
    (data / "VOC2012" / ".fssam2-prepared.json").write_text(json.dumps({"dataset": "pascal"}))
    code, lines = doctor(capsys)
    assert code == 0 and lines[-1] == "fssam2 doctor: ready", lines
    assert not [ln for ln in lines if ln.startswith("FAIL")]
    assert f"PASCAL-5i: verified by fssam2 prepare ({data / 'VOC2012'})" in line(lines, "data", "PASCAL-5i:")
    assert "COCO-20i: present, not verified by fssam2 prepare" in line(lines, "data", "COCO-20i:")
    assert "FSS-1000 split lists: NOT the published lists" in line(lines, "splits", "FSS-1000")  # generated ones


SHARED_LISTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "splits"


@pytest.mark.skipif(not SHARED_LISTS.is_dir(), reason="the published split lists (../shared/data/splits) are absent")
def test_doctor_recognises_the_published_lists_by_their_digests(homes, capsys):
    data, _ = homes
    (data / "splits").mkdir(parents=True)
    (data / "splits" / "fss").symlink_to(SHARED_LISTS / "fss")
    _, lines = doctor(capsys)
    assert "FSS-1000 split lists: the published lists (SHA-256 checked)" in line(lines, "splits", "FSS-1000")


def test_doctor_with_a_config_needs_only_its_benchmark(generated, homes, tmp_path, capsys):  # noqa: F811
    root, _ = generated
    data, _ = homes
    link_home(data, root, "VOC2012", "splits")
    pascal = str(CONFIGS / "pascal_fold0.yaml")
    code, lines = doctor(capsys, "--config", pascal)
    assert code == 0, lines
    assert line(lines, "data", "COCO-20i is not prepared").startswith("--")  # not needed by this config
    assert "(4 files in" in line(lines, "splits", "PASCAL-5i")  # fold 0: train and val, data list and class file
    assert line(lines, "memory").startswith("--") or torch.cuda.is_available()  # CPU: only with --measure
    nowhere = tmp_path / "nowhere"
    code, lines = doctor(capsys, "--config", pascal, "--data.root", str(nowhere), "--no-measure")
    assert code == 1
    assert f"run `fssam2 prepare pascal --root {nowhere}`" in line(lines, "data", "FAIL", "PASCAL-5i root")
    assert f"data root {nowhere}" in line(lines, "disk", "data root")
    code, lines = doctor(capsys, "--config", pascal, "--model.sam2_config", "fssam2_tiny", "--no-measure")
    assert code == 1 and "has no released weights" in line(lines, "weights", "FAIL")
    code, lines = doctor(capsys, "--config", pascal, "--model.sam2_checkpoint", "fssam2_tiny_tracking", "--no-measure")
    assert "fssam2_tiny_tracking: packaged with fssam2" in line(lines, "weights")


@pytest.mark.parametrize(
    "options",
    [
        ("--model.image_size", "100"),  # the model's constructor
        ("--model.encoder_batch", "0"),
        ("--model.lora", "null"),  # with the default trainable=lora
        ("--model.feature_cache.max_megabytes", "-1"),
        ("--data.init_args.support_control", "swap"),  # the DataModule's setup("fit")
        ("--ckpt_path", "/nowhere/last.ckpt"),  # checked while fit parses its options
        ("--model.lorra", "3"),  # parse errors: an unknown option, values of the wrong type
        ("--data.init_args.train_shots", "5"),
        ("--data.init_args.train_shots", "[3]"),
    ],
)
def test_doctor_fails_on_what_fit_refuses_with_fits_words(homes, tmp_path, capsys, options):
    run = ["--config", TINY, "--trainer.default_root_dir", str(tmp_path / "run"), *options]
    refusal = one_line_error(capsys, ["fit", *run], "").strip().removeprefix("fssam2: error: ")
    code, lines = doctor(capsys, *run)
    assert code == 1 and line(lines, "config").startswith("FAIL"), lines
    assert line(lines, "config").endswith(f"fssam2 fit refuses these options: {refusal}")
    assert lines[-1].startswith("fssam2 doctor: 1 problem(s) above")
    assert not (tmp_path / "run").exists()  # neither fit nor doctor made the run folder


def test_doctor_reports_a_misspelled_key_of_the_config_as_a_fail_line(homes, tmp_path, capsys):
    config = yaml.safe_load(Path(TINY).read_text())
    config["model"]["lorra"] = {"image_encoder_rank": 4}
    misspelled = tmp_path / "fit.yaml"
    misspelled.write_text(yaml.safe_dump(config))
    refusal = one_line_error(capsys, ["fit", "--config", str(misspelled)], "model.lorra").strip()
    assert "(in a config file) is not an option of fit: check its spelling" in refusal
    code, lines = doctor(capsys, "--config", str(misspelled))
    assert code == 1 and line(lines, "config", "FAIL").endswith(refusal.removeprefix("fssam2: error: "))
    assert line(lines, "weights", "not checked").startswith("--") and len(lines) < 20, lines
    assert lines[-1].startswith("fssam2 doctor: 1 problem(s) above")


def test_doctor_says_when_fit_stops_at_a_problem_it_reported(generated, homes, tmp_path, capsys):  # noqa: F811
    nowhere = tmp_path / "nowhere"
    run = ["--config", str(CONFIGS / "pascal_fold0.yaml"), "--data.root", str(nowhere), "--no-measure"]
    code, lines = doctor(capsys, *run, "--model.image_size", "100")
    assert code == 1 and line(lines, "data", "FAIL", "PASCAL-5i root").startswith("FAIL")
    assert "fssam2 fit stops at the problem above" in line(lines, "config", "--")  # counted once
    assert lines[-1].startswith("fssam2 doctor: 2 problem(s)")  # the data and its split lists


def test_doctor_measures_the_configured_run(homes, capsys, monkeypatch):
    code, lines = doctor(capsys, "--config", TINY, "--measure")
    assert code == 0, lines
    assert line(lines, "config").startswith("ok  ") and "fssam2 fit accepts these options" in line(lines, "config")
    assert line(lines, "data", "SyntheticDataModule").startswith("ok")
    memory = line(lines, "memory")
    found = re.search(r"peak (\d+\.\d+) GiB with 1 episode, (\d+\.\d+) GiB with 2 -> data.batch_size=4 needs", memory)
    assert found and float(found.group(1)) > 0 and memory.endswith("GiB free") and ": fits in " in memory, memory
    assert "FewShotSAM2 on fssam2_tiny, inputs at 64 px, 1-shot, trainable lora" in memory
    code, lines = doctor(capsys, "--config", TINY, "--measure", "--model.method", "fssam2.methods.SANSA")
    assert code == 0 and "SANSA on fssam2_tiny, inputs at 64 px, 1-shot, SANSA's adapters" in line(lines, "memory")
    monkeypatch.setattr("fssam2.cli.doctor.available_memory", lambda device: 1 << 10)
    code, lines = doctor(capsys, "--config", TINY, "--measure")
    assert code == 1 and "does NOT fit in 0.00 GiB free; not even 1 episode fits" in line(lines, "memory", "FAIL")
    if not torch.cuda.is_available():
        code, lines = doctor(capsys, "--config", TINY)
        assert code == 0 and "not measured" in line(lines, "memory")


def test_memory_verdict_extrapolates_linearly():
    from fssam2.cli.doctor import memory_verdict

    ok = memory_verdict(2 * GiB, 3 * GiB, 8, 9 * GiB, "cpu")
    assert ok.status == "ok" and "data.batch_size=8 needs about 9.00 GiB: fits in 9.00 GiB free" in ok.text
    short = memory_verdict(2 * GiB, 3 * GiB, 8, 6 * GiB, "cpu")
    assert short.status == "FAIL" and short.text.endswith(
        "does NOT fit in 6.00 GiB free; at most data.batch_size=5 fits"
    )
    out_of_memory = memory_verdict(2 * GiB, None, 8, 6 * GiB, "cuda:0")  # the 2-episode step ran out
    assert out_of_memory.status == "FAIL" and out_of_memory.text.endswith("at most data.batch_size=1 fits")
    assert memory_verdict(None, None, 1, 6 * GiB, "cuda:0").text.endswith("not even 1 episode fits")


def test_memory_verdict_counts_the_feature_cache_each_validation_fills():
    from fssam2.cli.doctor import memory_verdict

    roomy = memory_verdict(2 * GiB, 3 * GiB, 8, 14 * GiB, "cpu", cache=4 * GiB)
    assert roomy.status == "ok" and "validation's feature cache up to 4.00 GiB" in roomy.text
    tight = memory_verdict(2 * GiB, 3 * GiB, 8, 10 * GiB, "cpu", cache=4 * GiB)  # the step fits, step + cache not
    assert tight.status == "warn" and tight.text.endswith("set model.feature_cache.max_megabytes 1024 or lower")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer of a machine without a GPU")
def test_a_config_asking_for_a_gpu_fails_without_one(homes, capsys):
    code, lines = doctor(capsys, "--config", TINY, "--trainer.accelerator", "gpu", "--measure")
    assert code == 1 and "trainer.accelerator=gpu but no CUDA device is visible" in line(lines, "device", "FAIL")
    assert "not measured: the configured devices are not here" in line(lines, "memory")


def test_doctor_bad_options_are_one_line(homes, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(["doctor", "--measure"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and not out and err.startswith("fssam2: error: fssam2 doctor --measure measures")
    with pytest.raises(SystemExit) as exit_:
        run_cli(["doctor", "--config", "/nowhere/fit.yaml"])
    out, err = capsys.readouterr()
    assert (
        exit_.value.code == 2
        and err
        == "fssam2: error: --config /nowhere/fit.yaml does not exist: give a fit config (e.g. configs/pascal_fold0.yaml).\n"
    )


def test_doctor_is_listed(capsys):
    with pytest.raises(SystemExit):
        run_cli(["--help"])
    assert any(ln.split()[:1] == ["doctor"] for ln in capsys.readouterr().out.splitlines())


def test_a_data_home_that_is_a_file_is_one_line_for_prepare_fit_and_doctor(homes, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "data.tar"
    blocker.write_bytes(b"not a folder")
    pascal = ["--config", str(CONFIGS / "pascal_fold0.yaml"), "--trainer.default_root_dir", str(tmp_path / "run")]
    for home, problem in (
        (blocker, "is a file, not a folder"),
        (blocker / "sub", f"lies inside {blocker}, which is a file"),
    ):
        monkeypatch.setenv("FSSAM2_DATA", str(home))
        message = f"The data home $FSSAM2_DATA={home} {problem}: point $FSSAM2_DATA at a folder"
        one_line_error(capsys, ["prepare", "splits"], message)
        one_line_error(capsys, ["prepare", "pascal"], message)
        one_line_error(capsys, ["fit", *pascal], message)
        code, lines = doctor(capsys)
        assert code == 1 and line(lines, "data", "FAIL").endswith(
            f"{message} (`fssam2 prepare` creates it), or unset it."
        )
        assert not [ln for ln in lines if "not prepared" in ln]  # nothing under a data home that cannot be
        code, lines = doctor(capsys, *pascal)
        assert code == 1 and message in line(lines, "config", "FAIL")
        code, lines = doctor(capsys, "--config", TINY)  # generated data: the data home is not needed
        assert code == 0 and message in line(lines, "data", "warn"), lines
    assert blocker.read_bytes() == b"not a folder"
    one_line_error(capsys, ["prepare", "splits", "--root", str(blocker)], f"--root {blocker} is a file, not a folder")


# a training-free method (GF-SAM): checked as `fssam2 test` takes it, its semantic encoder's weights too
DEMO_GFSAM = str(CONFIGS / "demo_gfsam.yaml")


def gfsam(tmp_path, method_args):
    """The GF-SAM demo's options with `method_args`, its run folder under tmp_path."""
    return [
        "--config",
        DEMO_GFSAM,
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--model.method_args",
        json.dumps(method_args),
    ]


def test_doctor_checks_a_training_free_config_as_fssam2_test_runs_it(homes, tmp_path, capsys):
    run = ["--config", DEMO_GFSAM, "--trainer.default_root_dir", str(tmp_path / "run"), "--no-measure"]
    code, lines = doctor(capsys, *run)
    assert code == 0 and lines[-1] == f"fssam2 doctor: ready for {DEMO_GFSAM}", lines
    config = line(lines, "config")
    assert config.startswith("ok  ") and "fssam2.methods.GFSAM is training-free: `fssam2 test` runs it" in config
    assert "fssam2 fit refuses it" in config
    assert "fssam2_tiny_pointers: packaged with fssam2" in line(lines, "weights", "fssam2_tiny_pointers")
    assert line(lines, "weights", "encoder=sam2").startswith("--")  # no semantic encoder to load
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("method_args", "message"),
    [
        ({"encoder": "sam2", "encoder_size": 3}, "GFSAM has no option encoder_size"),
        ({"encoder": "dinov2_tiny", "encoder_checkpoint": 3}, "GFSAM option encoder_checkpoint=3"),
    ],
)
def test_doctor_fails_on_what_fssam2_test_refuses_of_a_training_free_method(
    homes, tmp_path, capsys, method_args, message
):
    run = gfsam(tmp_path, method_args)
    refusal = one_line_error(capsys, ["test", *run], message).strip()
    code, lines = doctor(capsys, *run, "--no-measure")
    assert code == 1 and line(lines, "config").startswith("FAIL"), lines
    assert line(lines, "config").endswith(
        f"fssam2 test refuses these options: {refusal.removeprefix('fssam2: error: ')}"
    )
    misspelled = yaml.safe_load(Path(DEMO_GFSAM).read_text())
    misspelled["model"]["method_arg"] = misspelled["model"].pop("method_args")
    config = tmp_path / "gfsam.yaml"
    config.write_text(yaml.safe_dump(misspelled))
    code, lines = doctor(capsys, "--config", str(config), "--no-measure")
    assert code == 1 and "model.method_arg.encoder (in a config file) is not an option" in line(lines, "config", "FAIL")
    assert not (tmp_path / "run").exists()


def test_doctor_checks_the_semantic_encoders_weights_without_fetching_them(homes, tmp_path, capsys):
    _, cache = homes
    missing = tmp_path / "weights" / "dinov2.safetensors"
    code, lines = doctor(capsys, *gfsam(tmp_path, {"encoder": "dinov2_tiny", "encoder_checkpoint": str(missing)}))
    assert code == 1 and line(lines, "config").startswith("ok"), lines
    assert f"model.method_args.encoder_checkpoint {missing} does not exist" in line(lines, "weights", "FAIL")
    assert lines[-1].startswith("fssam2 doctor: 1 problem(s) above")
    code, lines = doctor(capsys, *gfsam(tmp_path, {"encoder": "dinov2_tiny", "encoder_checkpoint": "random"}))
    assert code == 0 and "dinov2_tiny: random initialisation" in line(lines, "weights", "dinov2_tiny")
    code, lines = doctor(capsys, *gfsam(tmp_path, {"encoder": "dinov2_vits14"}))
    assert code == 0, lines
    encoder = line(lines, "weights", "dinov2_vits14")
    assert (
        encoder.startswith("warn") and "dinov2_vits14: not cached; the run first downloads it, about 84 MB," in encoder
    )
    assert "84 MB, from the Hugging Face Hub (timm/vit_small_patch14_dinov2.lvd142m" in encoder
    assert encoder.endswith("or run `fssam2 download dinov2_vits14` now")
    assert not cache.exists()  # nothing fetched or written
    from fssam2.cli.doctor import encoder_check

    default = encoder_check({}).text  # GF-SAM's own default: DINOv2 ViT-L/14, a 1.2 GB file
    assert "released semantic encoder dinov2_vitl14: not cached; the run first downloads it, about 1.1 GiB," in default
    cache.mkdir()
    (cache / "dinov2_vits14.safetensors").write_bytes(b"weights")
    code, lines = doctor(capsys, *gfsam(tmp_path, {"encoder": "dinov2_vits14"}))
    assert f"dinov2_vits14: cached at {cache / 'dinov2_vits14.safetensors'}" in line(lines, "weights", "ok", "dinov2")
    assert not (tmp_path / "run").exists()


def test_doctor_measures_an_evaluation_step_for_a_training_free_method(homes, tmp_path, capsys, monkeypatch):
    run = ["--config", DEMO_GFSAM, "--trainer.default_root_dir", str(tmp_path / "run"), "--measure"]
    code, lines = doctor(capsys, *run, "--data.init_args.batch_size", "2")
    assert code == 0, lines
    memory = line(lines, "memory")
    found = re.search(r"one evaluation step .*: peak (\d+\.\d+) GiB with data.batch_size=2", memory)
    assert found and float(found.group(1)) > 0 and ": fits in " in memory, memory
    assert "GFSAM on fssam2_tiny, inputs at 128 px, 1-shot" in memory and "as `fssam2 test` runs it" in memory
    assert "feature cache" in memory  # its budget counted: a test run holds it
    monkeypatch.setattr("fssam2.cli.doctor.available_memory", lambda device: 1 << 10)
    code, lines = doctor(capsys, *run, "--data.init_args.batch_size", "2")
    assert code == 1 and "does NOT fit in 0.00 GiB free" in line(lines, "memory", "FAIL")


def test_a_training_free_run_needs_only_the_data_its_test_reads(generated, homes, tmp_path, capsys):  # noqa: F811
    root, splits = generated
    data, _ = homes
    link_home(data, root, "VOC2012")
    (data / "splits" / "pascal" / "fss_list").mkdir(parents=True)
    (data / "splits" / "pascal" / "fss_list" / "val").symlink_to(splits / "pascal" / "fss_list" / "val")
    tiny = ["--model.sam2_config", "fssam2_tiny", "--model.sam2_checkpoint", "random", "--model.image_size", "64"]
    run = ["--config", str(CONFIGS / "gfsam" / "pascal_fold0.yaml"), *tiny, "--trainer.default_root_dir"]
    code, lines = doctor(
        capsys, *run, str(tmp_path / "run"), "--model.method_args", '{"encoder": "sam2"}', "--no-measure"
    )
    assert code == 0, lines  # no training lists: a test reads the val lists only
    assert "(2 files in" in line(lines, "splits", "ok", "PASCAL-5i")
    assert line(lines, "config").startswith("ok") and "`fssam2 test` runs it" in line(lines, "config")
