"""The real `fssam2` CLI, driven end to end with tests/configs/tiny.yaml."""

import json
import os

import pytest
import torch
import wandb
from jsonargparse import Namespace

from fssam2.cli import run_cli
from fssam2.cli.app import warn_batch_limits
from fssam2.lora import is_lora_parameter
from helpers import TESTS, one_line_error

TINY = str(TESTS / "configs" / "tiny.yaml")


def cli(*args):
    return run_cli([args[0], "--config", TINY, *args[1:]])


@pytest.mark.slow
def test_fit_then_test_reloads_the_checkpoint_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory but the run dir
    run_dir = tmp_path / "run"
    fit = cli(
        "fit",
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.logger",
        "lightning.pytorch.loggers.WandbLogger",
        "--trainer.logger.offline",
        "true",
    )
    trained = fit.model.model
    lora_b = [p for n, p in trained.named_parameters() if n.endswith("lora_B")]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # the adapters trained
    frozen = {n for n, p in trained.named_parameters() if not p.requires_grad}
    assert frozen and not any(is_lora_parameter(n) for n in frozen)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert list((run_dir / "wandb").glob("offline-run-*")), "W&B files belong under the run dir"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    in_memory = fit.trainer.test(fit.model, datamodule=fit.datamodule, verbose=False)[0]
    results = json.loads((run_dir / "test_metrics.json").read_text())
    assert results["miou"] == pytest.approx(in_memory["test/miou"]) and set(results["per_class"]) == {
        "1",
        "2",
        "3",
        "4",
        "5",
    }
    assert results["episodes"] == 25 and results["shot"] == 1 and results["fold"] == 0
    assert 0 < results["encoder_passes"] < 50 and 0 < results["memory_encoder_passes"] <= 25
    wandb_run = next((run_dir / "wandb").glob("offline-run-*"))
    wandb.finish()  # flush the offline run to disk
    assert list(wandb_run.glob("files/media/table/test/per_class_iou*.json"))
    assert len(list(wandb_run.glob("files/media/images/test/episodes*.png"))) == 8
    reloaded = cli("test", "--trainer.default_root_dir", str(run_dir), "--ckpt_path", str(last))
    from_disk = {k: v.item() for k, v in reloaded.trainer.callback_metrics.items()}
    assert from_disk["test/miou"] == pytest.approx(in_memory["test/miou"], abs=1e-6)
    assert from_disk["test/fbiou"] == pytest.approx(in_memory["test/fbiou"], abs=1e-6)
    for (name, a), b in zip(trained.state_dict().items(), reloaded.model.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert "max_epochs: 2" in (run_dir / "config.yaml").read_text()  # the training config survives the test
    assert "ckpt_path: " + str(last) in (run_dir / "test_config.yaml").read_text()
    untrained = cli("test", "--trainer.default_root_dir", str(tmp_path / "untrained"))
    assert untrained.trainer.callback_metrics["test/miou"] != pytest.approx(in_memory["test/miou"])


@pytest.mark.slow
def test_ddp_spawn_two_processes_equal_one(tmp_path, capfd):
    gap = ("--data.init_args.gap_episodes", "10")  # a support-gap subset of the 25 episodes
    single = cli("test", "--trainer.default_root_dir", str(tmp_path / "one"), *gap)
    double = cli(
        "test",
        *gap,
        "--trainer.default_root_dir",
        str(tmp_path / "two"),
        "--trainer.strategy",
        "ddp_spawn",
        "--trainer.devices",
        "2",
    )
    one = single.trainer.callback_metrics
    two = double.trainer.callback_metrics
    assert double.trainer.world_size == 2
    for key in ("test/miou", "test/fbiou", "test/iou_class_1", "test/iou_class_5"):
        assert two[key].item() == one[key].item(), key  # 25 episodes over 2 processes, none twice
    # The support gap's subset runs once too, with the same figures.
    for key in ("test/gap_episodes", "test/gap_miou_true", "test/gap_miou_swap", "test/support_gap"):
        assert two[key].item() == one[key].item(), key
    # Every epoch figure is reduced over the processes before it is logged: Lightning is told so.
    assert "sync_dist=True" not in capfd.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("trainable", ["lora", "all", "sansa"])
def test_fit_with_ddp_spawn(tmp_path, trainable):
    """Training over 2 processes: equal shards, gradients for every trainable parameter (FS-SAM2's
    LoRA, all of its parameters, SANSA's adapters)."""
    run_dir = tmp_path / trainable
    method = ["--model.method", "fssam2.methods.SANSA"] if trainable == "sansa" else ["--model.trainable", trainable]
    fit = cli(
        "fit",
        "--trainer.default_root_dir",
        str(run_dir),
        *method,
        "--trainer.strategy",
        "ddp_spawn",
        "--trainer.devices",
        "2",
        "--trainer.max_epochs",
        "1",
    )
    assert fit.trainer.world_size == 2
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 4  # limit_train_batches steps on each process
    assert "val/miou" in fit.trainer.callback_metrics


def test_print_config(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli("fit", "--print_config")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "sam2_config: fssam2_tiny" in out and "image_rank" not in out
    assert "image_encoder_rank: 4" in out and "use_distributed_sampler: false" in out


def test_unknown_config_key(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        cli("fit", "--model.learning_rate", "0.1")
    assert exit_.value.code == 2
    assert "learning_rate" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(TINY).read().replace("  lr: 0.01", "  lr: 0.01\n  lora_rnak: 3"))
    with pytest.raises(SystemExit):
        run_cli(["fit", "--config", str(bad)])
    assert "lora_rnak" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model.image_size", "100"], "image_size=100 is not a positive multiple of 32"),
        (["--data.init_args.shot", "0"], "data.shot=0"),
        (["--model.sam2_checkpoint", "/nonexistent/sam2.pt"], "/nonexistent/sam2.pt does not exist"),
    ],
)
def test_bad_input_is_one_line_without_traceback(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        cli("test", *args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.strip().count("\n") == 0 and err.startswith("fssam2: error:")


def test_console_script_is_installed():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "fssam2"]
    assert script.value == "fssam2.cli:main"
    assert os.environ.get("NO_ALBUMENTATIONS_UPDATE") == "1"


def test_predict_and_validate(tmp_path):
    predict = cli("predict", "--trainer.default_root_dir", str(tmp_path))
    batches = predict.trainer.predict_loop.predictions
    predictions = [p for batch in batches for p in batch]
    assert sorted(p["index"] for p in predictions) == list(range(25))
    assert all(p["mask"].shape == (64, 64) and p["mask"].dtype == torch.bool for p in predictions)
    written = sorted((tmp_path / "predictions").iterdir())
    assert len(written) == 25 and written[0].name.startswith("00000_test_") and written[0].name.endswith(".png")
    import numpy as np
    from PIL import Image

    first = next(p for p in predictions if p["index"] == 0)
    assert np.array_equal(np.asarray(Image.open(written[0])) == 255, first["mask"].numpy())
    validate = cli("validate", "--trainer.default_root_dir", str(tmp_path), "--data.init_args.num_workers", "2")
    assert {"val/miou", "val/fbiou", "val/loss"} <= set(validate.trainer.callback_metrics)
    # validate writes its results as test does, and a second validate keeps the first's.
    first = json.loads((tmp_path / "val_metrics.json").read_text())
    assert first["miou"] == pytest.approx(validate.trainer.callback_metrics["val/miou"].item())
    assert (first["episodes"], first["config"], first["ckpt_path"]) == (8, "validate_config.yaml", None)
    assert first["per_class"] and first["data"] == "SyntheticDataModule" and first["support_control"] == "none"
    cli("validate", "--trainer.default_root_dir", str(tmp_path), "--data.init_args.shot", "2")
    assert json.loads((tmp_path / "val_metrics.json").read_text()) == first
    assert json.loads((tmp_path / "val_metrics-1.json").read_text())["shot"] == 2


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in ("fit", "validate", "test", "predict", "segment", "export", "download", "prepare", "episodes"):
        line = next((ln for ln in out.splitlines() if ln.split()[:1] == [name]), None)
        assert line is not None and len(line.split()) > 1, f"{name} has no help line in:\n{out}"


def test_the_dispatcher_runs_exactly_the_commands_the_application_lists():
    from fssam2.cli import COMMANDS
    from fssam2.cli.app import OWN_COMMANDS

    assert tuple(COMMANDS) == OWN_COMMANDS  # `fssam2 --help` lists what run_cli runs


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "fssam2.cli", "--help"], capture_output=True, text=True, check=True)
    assert "doctor" in out.stdout and "fit" in out.stdout


def _one_error_line(capsys, args, *expected):
    with pytest.raises(SystemExit) as exit_:
        cli(*args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("fssam2: error:") and err.strip().count("\n") == 0, err
    assert all(text in err for text in expected), err


@pytest.mark.parametrize("kind", ["missing", "truncated", "text", "sam2_weights", "folder"])
def test_bad_ckpt_path_is_one_line_naming_the_file(tmp_path, capsys, kind):
    ckpt = tmp_path / f"{kind}.ckpt"
    whole = {"state_dict": {"w": torch.zeros(4096)}, "pytorch-lightning_version": "2.6.6", "epoch": 0}
    if kind == "truncated":
        torch.save(whole, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif kind == "text":
        ckpt.write_text("not a checkpoint\n")
    elif kind == "sam2_weights":
        torch.save({"model": {"w": torch.zeros(4)}}, ckpt)  # Meta's format, not a training checkpoint
    elif kind == "folder":
        ckpt.mkdir()
    run_dir = tmp_path / "run"
    _one_error_line(capsys, ["test", "--trainer.default_root_dir", str(run_dir), "--ckpt_path", str(ckpt)], str(ckpt))
    assert not run_dir.exists()  # a run that fails before it starts writes nothing


def test_run_folder_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    run_dir = tmp_path / "notes.txt" / "run"
    _one_error_line(capsys, ["test", "--trainer.default_root_dir", str(run_dir)], str(tmp_path / "notes.txt"))


@pytest.fixture
def two_class_folders(tmp_path):
    """A folder dataset of 2 classes, 3 images each (48 px, a square object)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "two"
    for k, name in enumerate(["ant", "bee"]):
        (root / name).mkdir(parents=True)
        for j in range(3):
            image = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
            mask = np.zeros((48, 48), np.uint8)
            mask[8 + 4 * j : 30 + 4 * j, 10 + 5 * k : 34] = 255
            image[mask > 0] = (200, 40 + 100 * k, 40)
            Image.fromarray(image).save(root / name / f"p{j}.jpg")
            Image.fromarray(mask).save(root / name / f"p{j}.png")
    return root


def test_folder_data_with_one_held_out_class_or_none(two_class_folders, tmp_path, capsys):
    folder = ["--data", "fssam2.benchmarks.FolderDataModule", "--data.root", str(two_class_folders)]
    # 2 classes, the default 4 folds: fold 0 holds out one class, and its test writes its results.
    cli("test", *folder, "--trainer.default_root_dir", str(tmp_path / "one"))
    results = json.loads((tmp_path / "one" / "test_metrics.json").read_text())
    assert set(results["per_class"]) == {"ant"} and results["episodes"] == 3  # the class folder's name
    assert results["miou"] == pytest.approx(results["per_class"]["ant"])
    # Fold 1 of 4 holds no class: one line naming the option to change, nothing written.
    run_dir = tmp_path / "none"
    _one_error_line(capsys, ["test", *folder, "--data.fold", "1", "--trainer.default_root_dir", str(run_dir)],
                    "data.num_folds", "at most 2")  # fmt: skip
    assert not run_dir.exists()


@pytest.mark.slow
def test_options_given_with_ckpt_path_are_honoured_or_refused(trained_run, tmp_path, capsys):
    """Lightning replaced every model option with the checkpoint's: evaluation options given
    with --ckpt_path were ignored without a word, and so were conflicting architecture options."""
    last, base = str(trained_run.last), trained_run.tiny_options
    uncached = tmp_path / "uncached"
    test = cli(
        "test", f"--trainer.default_root_dir={uncached}", "--ckpt_path", last, *base, "--model.feature_cache", "null"
    )
    assert test.model.cache_config is None
    assert json.loads((uncached / "test_metrics.json").read_text())["encoder_passes"] is None
    test = cli(
        "test", f"--trainer.default_root_dir={tmp_path / 'b'}", "--ckpt_path", last, *base, "--model.encoder_batch", "3"
    )
    assert test.model.model.encoder_batch == 3 and test.model.hparams.merge_lora is True
    _one_error_line(
        capsys,
        [
            "test",
            f"--trainer.default_root_dir={tmp_path / 'c'}",
            "--ckpt_path",
            last,
            *base,
            "--model.image_size",
            "96",
        ],
        "--model.image_size=96 conflicts with",
        "image_size=64",
    )
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--data.init_args.shot", "two"], "fssam2: error: --data.init_args.shot expects int, got 'two'."),
        (["--model.lr", "abc"], "fssam2: error: --model.lr expects float, got 'abc'."),
        (["--model.image_size", "x"], "fssam2: error: --model.image_size expects int or null, got 'x'."),
        (
            ["--data.init_args.train_shots", "5"],
            "fssam2: error: --data.init_args.train_shots expects [int, int] or null, got '5'.",
        ),
        (
            ["--model.lorra", "3"],
            "fssam2: error: --model.lorra is not an option: check its spelling (--help lists the options).",
        ),
        (
            ["--data.init_args.test_classes", "[a]"],
            "fssam2: error: --data.init_args.test_classes is not an option of SyntheticDataModule: check its spelling "
            "(--help lists the options).",
        ),
    ],
)
def test_a_type_error_leads_with_one_line_naming_the_option(capsys, args, line):
    with pytest.raises(SystemExit) as exit_:
        cli("test", *args)
    assert exit_.value.code == 2 and capsys.readouterr().err.splitlines()[0] == line


def test_a_missing_required_option_leads_with_one_line(capsys):
    with pytest.raises(SystemExit):
        cli("test", "--data", "fssam2.benchmarks.FolderDataModule")  # its root has no default
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("fssam2: error: missing --data.init_args.root"), first


@pytest.mark.parametrize("option", ["--data.init_args.support_control", "--data.support_control"])
def test_a_bad_choice_is_one_line_naming_the_values(capsys, option):
    one_line_error(
        capsys,
        ["test", "--config", TINY, option, "bogus"],
        "fssam2: error: --data.init_args.support_control expects one of none, swap, blank, got 'bogus'.",
    )


def test_fit_with_a_support_control_is_refused_before_the_logger_writes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    one_line_error(
        capsys,
        ["fit", "--config", TINY, "--trainer.default_root_dir", str(run_dir), "--data.init_args.support_control", "swap",
         "--trainer.logger", "lightning.pytorch.loggers.WandbLogger", "--trainer.logger.offline", "true"],
        "data.support_control=swap is for evaluation runs",
    )  # fmt: skip
    assert not (run_dir / "wandb").exists() and not run_dir.exists()


def test_a_batch_limit_read_as_1_0_warns_that_it_means_every_batch(tmp_path, capsys):
    """Lightning takes the float 1.0 as 100% and the integer 1 as one batch. Which one a written 1
    becomes depends on the jsonargparse version (a float before 4.53): the warning comes exactly
    when the run then validates every batch."""
    no_gap = ("--data.init_args.gap_episodes", "0")  # the episodes' own batches only, not the support gap's
    validate = cli(
        "validate", "--trainer.default_root_dir", str(tmp_path / "a"), "--trainer.limit_val_batches", "1", *no_gap
    )
    every = validate.trainer.num_val_batches == [2]  # 8 episodes, 4 a batch
    assert validate.trainer.num_val_batches in ([1], [2])
    warnings = [line for line in capsys.readouterr().err.splitlines() if "limit_val_batches" in line]
    assert warnings == (
        [
            "fssam2: warning: trainer.limit_val_batches=1.0 runs every val batch (1 reads as 1.0, i.e. 100%); for a "
            "number of batches give 2 or more, for a share a fraction below 1 such as 0.5."
        ]
        if every
        else []
    )
    warn_batch_limits(Namespace(limit_val_batches=1.0), "validate")
    assert "limit_val_batches=1.0 runs every val batch" in capsys.readouterr().err
    warn_batch_limits(Namespace(limit_val_batches=1, limit_train_batches=2), "fit")
    assert capsys.readouterr().err == "", "the integer 1 is one batch: nothing to say"
