"""The synthetic tracking clips and the script that pretrains the tiny SAM2 on them."""

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fssam2 import build_sam2
from fssam2.cli import run_cli
from fssam2.methods.fssam2 import FewShotSAM2
from fssam2.synthetic import SyntheticVideo

ROOT = Path(__file__).resolve().parent.parent


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clips_are_seeded_and_the_object_is_there_in_both_frames():
    video = SyntheticVideo(image_size=96, seed=3)
    for index in range(20):
        first, mask0, later, mask1 = video.pair(index)
        again = video.pair(index)
        for a, b in zip((first, mask0, later, mask1), again, strict=True):
            np.testing.assert_array_equal(a, b)
        assert first.shape == later.shape == (96, 96, 3) and first.dtype == np.uint8
        assert mask0.shape == mask1.shape == (96, 96) and mask0.dtype == bool
        assert mask0.sum() > 50, "the memory frame shows the whole object"
    assert not np.array_equal(video.pair(0)[0], SyntheticVideo(image_size=96, seed=4).pair(0)[0])


def test_motion_zero_keeps_the_layout_and_full_motion_moves_it():
    video = SyntheticVideo(image_size=96)
    moved = 0
    for index in range(30):
        _, mask0, _, still = video.pair(index, motion=0.0)
        covered = still & ~mask0
        assert not covered.any(), "without motion the object stays in place (it may only be covered)"
        _, mask0, _, mask1 = video.pair(index, motion=1.0)
        moved += int((mask0 != mask1).sum() > 0.3 * mask0.sum())
    assert moved >= 20


def test_distractors_make_the_memory_necessary():
    """Most clips hold several objects, so finding 'the object' needs the memory."""
    video = SyntheticVideo(image_size=96)
    objects = []
    for index in range(40):
        first, mask0, later, mask1 = video.pair(index, motion=0.0)
        # pixels far from the background grey: objects; the tracked object is a part of them
        objects.append(mask1.sum() / max(1, (np.abs(later.astype(int) - later.mean()).sum(2) > 60).sum()))
    assert np.mean(objects) < 0.7


def test_pretraining_script_writes_a_loadable_checkpoint_and_never_overwrites(tmp_path, capsys):
    script = load_script("pretrain_tracking")
    out = tmp_path / "tracker.pt"
    args = ["--steps", "2", "--batch", "2", "--eval-every", "2", "--eval-clips", "4", "--image-size", "64"]
    script.main([*args, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "IoU true" in printed and "swap" in printed and "sha256" in printed
    trained = build_sam2("fssam2_tiny", out, image_size=64).state_dict()
    twin = tmp_path / "twin.pt"
    script.main([*args, "--out", str(twin)])
    again = build_sam2("fssam2_tiny", twin, image_size=64).state_dict()
    assert all(torch.equal(trained[k], again[k]) for k in trained), "seeded: the same arguments give the same weights"
    torch.manual_seed(0)
    init = build_sam2("fssam2_tiny", image_size=64).state_dict()
    assert any(not torch.equal(trained[k], init[k]) for k in trained), "the weights were trained"
    before = out.read_bytes()
    with pytest.raises(SystemExit):
        script.main([*args, "--out", str(out)])
    assert out.read_bytes() == before


SHORT_PRETRAINING = ["--batch", "2", "--eval-every", "2", "--eval-clips", "4", "--image-size", "64"]


def test_pretraining_saves_as_it_goes_so_a_killed_run_leaves_a_whole_model(tmp_path, monkeypatch):
    script = load_script("pretrain_tracking")
    out = tmp_path / "tracker.pt"
    step = script.Run.step

    def killed_at_the_fourth_step(self, index, batch):
        if index == 3:
            raise KeyboardInterrupt  # the run is killed mid-way, after the save at step 2
        return step(self, index, batch)

    monkeypatch.setattr(script.Run, "step", killed_at_the_fourth_step)
    with pytest.raises(KeyboardInterrupt):
        script.main([*SHORT_PRETRAINING, "--steps", "5", "--save-every", "2", "--out", str(out)])
    saved = torch.load(out, weights_only=True)
    assert saved["steps"] == 2 and saved["planned_steps"] == 5 and saved["args"]["save_every"] == 2
    build_sam2("fssam2_tiny", out, image_size=64)  # whole, and a tiny SAM2
    assert [p.name for p in tmp_path.iterdir()] == ["tracker.pt"], "no partial file is left beside it"


def test_a_time_budget_plans_the_steps_and_runs_the_recipe_for_that_many(tmp_path, capsys, monkeypatch):
    """--minutes times a throwaway run, then runs the recipe itself: the same weights as --steps N
    (clips drawn by worker processes or by the main one alike)."""
    script = load_script("pretrain_tracking")
    monkeypatch.setattr(script, "PROBE_WARMUP", 0)
    monkeypatch.setattr(script, "PROBE_STEPS", 1)
    timed, fixed = tmp_path / "timed.pt", tmp_path / "fixed.pt"
    short = [*SHORT_PRETRAINING, "--eval-every", "10", "--steps", "2"]
    script.main([*short, "--minutes", "5", "--workers", "2", "--out", str(timed)])
    assert "2 steps planned (the same run as --steps 2)" in capsys.readouterr().out
    script.main([*short, "--out", str(fixed)])
    timed_run, fixed_run = torch.load(timed, weights_only=True), torch.load(fixed, weights_only=True)
    assert timed_run["steps"] == fixed_run["steps"] == 2 and timed_run["args"]["minutes"] == 5
    assert all(torch.equal(v, fixed_run["model"][k]) for k, v in timed_run["model"].items())


def test_the_planned_steps_and_their_evaluations_fit_the_budget():
    planned_steps = load_script("pretrain_tracking").planned_steps
    rng = np.random.default_rng(0)
    for _ in range(500):
        budget, spent = rng.uniform(60, 3600), rng.uniform(0, 30)
        step, evaluation, draw, every = rng.uniform(0.005, 0.5), rng.uniform(0.1, 20), rng.uniform(0, 5), 500
        n = planned_steps(budget, spent, step, evaluation, draw, every, cap=10**9)
        cost = spent + n * step + (n // every + 1) * evaluation + draw  # training, evaluations, the final one
        assert cost <= budget, "the plan fits"
        assert cost > 0.95 * budget - step - 2 * evaluation, "and uses the budget"
    assert planned_steps(600, 0, 0.01, 1, 0, 500, cap=7) == 7
    assert planned_steps(10, 9.9, 1, 1, 0, 500, cap=100) == 1, "at least one step"


def test_a_run_out_of_time_evaluates_saves_and_ends_cleanly(tmp_path, capsys, monkeypatch):
    """Steps slower than timed: the run stops when its final evaluation would no longer fit."""
    script = load_script("pretrain_tracking")
    monkeypatch.setattr(script, "PROBE_STEPS", 1)
    monkeypatch.setattr(script, "planned_steps", lambda *args: 1000)  # far more than 1.2 s can hold
    out = tmp_path / "tracker.pt"
    script.main([*SHORT_PRETRAINING, "--minutes", "0.02", "--save-every", "1", "--out", str(out)])  # returns: exit 0
    printed = capsys.readouterr().out
    saved = torch.load(out, weights_only=True)
    assert 1 <= saved["steps"] < saved["planned_steps"] == 1000
    assert f"time is up after {saved['steps']} of 1000 planned steps" in printed
    assert f"step {saved['steps']:>6}" in printed and "IoU true" in printed, "the model is evaluated as saved"
    build_sam2("fssam2_tiny", out, image_size=64)


def test_pretraining_never_replaces_a_file_that_appears_at_out(tmp_path, capsys, monkeypatch):
    script = load_script("pretrain_tracking")
    out = tmp_path / "tracker.pt"
    step = script.Run.step

    def someone_writes_there(self, index, batch):
        if index == 0:
            out.write_bytes(b"another run's file")
        return step(self, index, batch)

    monkeypatch.setattr(script.Run, "step", someone_writes_there)
    with pytest.raises(SystemExit) as refused:
        script.main([*SHORT_PRETRAINING, "--steps", "3", "--save-every", "1", "--out", str(out)])
    assert "--out" in str(refused.value) and str(out) in str(refused.value)
    assert out.read_bytes() == b"another run's file"


def test_pretraining_on_a_gpu_this_torch_cannot_see_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    script = load_script("pretrain_tracking")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as refused:
        script.main([*SHORT_PRETRAINING, "--steps", "1", "--device", "cuda", "--out", str(tmp_path / "t.pt")])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "--device cuda" in err and "Traceback" not in err
    assert not (tmp_path / "t.pt").exists()


def a_tiny_sam2_file(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save({"model": build_sam2("fssam2_tiny").state_dict()}, path)
    return path


class Started(Exception):
    """Raised by a stand-in for the first CLI run, with its arguments."""


def test_the_demo_starts_every_run_from_the_tiny_sam2_it_is_given(tmp_path, capsys, monkeypatch):
    demo = load_script("demo")
    mine = a_tiny_sam2_file(tmp_path / "mine.pt")

    def family_result(family, base, *rest):
        raise Started(base)

    monkeypatch.setattr(demo, "family_result", family_result)
    with pytest.raises(Started) as started:
        demo.main(["--runs", str(tmp_path / "a"), "--families", "shape", "--jobs", "1", "--sam2-checkpoint", str(mine)])
    base = started.value.args[0]
    assert base[base.index("--model.sam2_checkpoint") + 1] == str(mine.resolve())
    # One process per family: each is given the file.
    commands = []
    monkeypatch.setattr(demo.subprocess, "run", lambda c, **kw: commands.append(c) or SimpleNamespace(returncode=1))
    with pytest.raises(SystemExit):
        demo.main(
            ["--runs", str(tmp_path / "b"), "--families", "hue", "shape", "--jobs", "2", "--sam2-checkpoint", str(mine)]
        )
    assert len(commands) == 2
    assert all(c[c.index("--sam2-checkpoint") + 1] == str(mine.resolve()) for c in commands)
    # A file that is no tiny SAM2 ends the demo before any run.
    (tmp_path / "not.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as refused:
        demo.main(["--runs", str(tmp_path / "c"), "--sam2-checkpoint", str(tmp_path / "not.pt")])
    assert refused.value.code == 2 and "not.pt" in capsys.readouterr().err


def test_compare_tracker_ships_only_a_tiny_sam2_that_beats_the_shipped_one_on_every_family():
    compare = load_script("compare_tracker").compare
    shipped = {family: numbers[:3] for family, numbers in load_script("compare_tracker").SHIPPED.items()}
    lines, ship = compare(shipped)
    assert not ship, "the shipped model does not beat itself"
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[2:]}
    assert "| met |" in rows["hue"] and all("NOT met" in rows[f] for f in ("shape", "texture", "letters"))
    better = {"hue": (80.0, 20.0, 37.8), "shape": (70.0, 40.0, 41.9), "texture": (65.0, 35.0, 41.9)}
    better["letters"] = (60.0, 30.0, 43.7)
    lines, ship = compare(better)
    assert ship and all("| met | yes |" in line for line in lines[2:])
    lines, ship = compare({**better, "hue": (77.0, 20.8, 37.8)})  # hue's gap 56.2 against the shipped 56.8
    assert not ship and "| NOT met | no |" in lines[2]


def test_compare_tracker_runs_the_demo_and_the_transfer_from_the_file_and_writes_the_table(tmp_path, monkeypatch):
    script = load_script("compare_tracker")
    demo, transfer = load_script("demo"), load_script("transfer")
    mine = a_tiny_sam2_file(tmp_path / "mine.pt")
    commands = []

    def fake_run(command):  # each script's results file, as it writes it, in its own dated folder
        commands.append(command)
        folder = Path(command[command.index("--runs") + 1]) / "20260101-000000"
        folder.mkdir(parents=True)
        if command[1].endswith("demo.py"):
            rows = {demo.METHODS["fssam2"][1]: 70.0, demo.SWAP_ROW: 40.0, demo.ORACLE_ROW: 41.9}
            families = {f: {"rows": {k: {"miou": v} for k, v in rows.items()}} for f in ("hue", "shape", "texture")}
            (folder / "demo_results.json").write_text(json.dumps({"families": families}))
        else:
            rows = {transfer.TRAINED_ROW: 60.0, transfer.SWAP_ROW: 30.0, transfer.ORACLE_ROW: 43.7}
            (folder / "transfer_results.json").write_text(
                json.dumps({"rows": {k: {"miou": v} for k, v in rows.items()}})
            )
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(script.subprocess, "run", fake_run)
    script.main(["--sam2-checkpoint", str(mine), "--runs", str(tmp_path / "runs"), "--", "--trainer.max_epochs=1"])
    assert [c[c.index("--sam2-checkpoint") + 1] for c in commands] == [str(mine.resolve())] * 2
    assert all(c[-1] == "--trainer.max_epochs=1" for c in commands)
    (folder,) = (tmp_path / "runs").iterdir()
    table = (folder / "compare.md").read_text()
    assert "| hue | 70.0 | 40.0 | +30.0 (+56.8) |" in table and "keep the shipped one" in table
    assert json.loads((folder / "compare.json").read_text())["ship"] is False


def test_shipped_tracker_finds_the_object_its_memory_shows():
    """The packaged tracker reads its memory: another clip's memory or an empty mask loses the object."""
    script = load_script("pretrain_tracking")
    model = FewShotSAM2(build_sam2("fssam2_tiny", "fssam2_tiny_tracking"))
    scores = script.evaluate(model, "hue", clips=64, seed=0, batch=16, prompts=False)
    assert scores["true"] > 50
    assert scores["true"] - scores["swap"] > 25
    assert scores["blank"] < 15


@pytest.mark.slow
def test_short_meta_training_from_the_tracker_keeps_the_support_deciding(tmp_path):
    """The demo's recipe (LoRA on the tracker): after a short meta-training run, other supports
    change the held-out predictions measurably. A support-blind model (what the random-init,
    full-rate recipe became) scores the same under swap."""
    demo = str(ROOT / "configs" / "demo.yaml")
    short = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=25",
        "--trainer.limit_val_batches=2",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.test_episodes=120",
        "--data.init_args.pool_sizes=[600,120,240]",
    ]
    fit = run_cli(["fit", "--config", demo, *short, f"--trainer.default_root_dir={tmp_path}"])
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    assert fit.trainer.global_step == 25
    results = {}
    for control in ("none", "swap", "blank"):
        folder = tmp_path / control
        run_cli(
            ["test", "--config", demo, *short, f"--trainer.default_root_dir={folder}", "--ckpt_path", ckpt]
            + ["--data.init_args.support_control", control]
        )
        results[control] = json.loads((folder / "test_metrics.json").read_text())
        assert results[control]["support_control"] == control
    assert results["none"]["miou"] - results["swap"]["miou"] > 20
    assert results["none"]["miou"] - results["blank"]["miou"] > 20


def test_shipped_varied_tracker_reads_its_memory_and_its_prompts():
    """The demos' tiny SAM2: on held-out varied clips it finds the object its memory shows (not with
    another clip's memory or an empty one), and decodes an object from a box or clicks with no memory."""
    script = load_script("pretrain_tracking")
    model = FewShotSAM2(build_sam2("fssam2_tiny", "fssam2_tiny_varied"))
    scores = script.evaluate(model, "varied", clips=64, seed=0, batch=16, prompts=True)
    assert scores["true"] > 45 and scores["true"] - scores["swap"] > 25 and scores["blank"] < 10
    assert scores["prompt_box"] > 60 and scores["prompt_points"] > 50 and scores["prompt_point"] > 40
    first = FewShotSAM2(build_sam2("fssam2_tiny", "fssam2_tiny_tracking"))
    assert script.evaluate(first, "varied", clips=64, seed=0, batch=16, prompts=True)["prompt_box"] < 40, (
        "the first tracker never saw a prompt: the check above can fail"
    )


def test_the_demos_tiny_sam2_tracks_through_both_forwards_and_decodes_prompts():
    """fssam2_tiny_pointers, which every demo starts from: on held-out varied clips it finds the object
    its memory shows through FS-SAM2's forward and through SANSA's (object pointers read), loses it
    with another clip's memory or an empty one, and decodes an object from a box or clicks."""
    from fssam2.methods import SANSA, AdapterConfig

    script = load_script("pretrain_tracking")
    model = FewShotSAM2(build_sam2("fssam2_tiny", "fssam2_tiny_pointers"))
    sansa = SANSA(model.sam2, AdapterConfig(stages=()))
    scores = script.evaluate(model, "varied", clips=64, seed=0, batch=16, prompts=True, sansa=sansa)
    assert scores["true"] > 45 and scores["true"] - scores["swap"] > 25 and scores["blank"] < 10
    assert scores["pointer_true"] > 45 and scores["pointer_true"] - scores["pointer_swap"] > 25
    assert scores["prompt_box"] > 60 and scores["prompt_points"] > 50 and scores["prompt_point"] > 40


def test_the_demo_says_in_words_whether_the_support_decides_the_mask():
    """The verdict `make demo` prints under each family, from the measured numbers: the hue family's
    and the shape family's rows as measured (README, docs/synthetic.md)."""
    verdict = load_script("demo").verdict
    hue = verdict("hue", trained=77.6, swap=20.8, oracle=37.8)
    assert hue.startswith("the support decides the mask: the model finds the hue band its support shows\n")
    assert "meta-trained - swap +56.8 mIoU, meta-trained - objectness oracle +39.8" in hue
    shape = verdict("shape", trained=38.9, swap=31.8, oracle=41.9)
    assert shape.startswith("the support hardly decides the mask: the model segments salient objects")
    assert "meta-trained - swap +7.1 mIoU, meta-trained - objectness oracle -3.0" in shape
    assert "the support decides from +40 and +10" in shape
    # The thresholds define "decides": just under either one, the support no longer decides.
    assert verdict("hue", trained=77.6, swap=37.7, oracle=37.8).startswith("the support hardly decides")
    assert verdict("hue", trained=77.6, swap=20.8, oracle=67.7).startswith("the support picks the object, but")
    for text in (hue, shape):
        assert "NOT met" not in text and "target" not in text


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_demo_runs_each_family_it_is_given_with_its_controls(tmp_path, capsys, jobs):
    """experiments/demo.py, cut to a few steps, in one process or one per family: one table per
    family, each with the five rows and the in-run support gap, and every family's results in
    demo_results.json."""
    demo = load_script("demo")
    short = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=2",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.test_episodes=16",
        "--data.init_args.gap_episodes=8",
        "--data.init_args.pool_sizes=[200,40,80]",
    ]
    demo.main(["--runs", str(tmp_path), "--families", "hue", "texture", "--jobs", jobs, "--", *short])
    printed = capsys.readouterr().out
    assert printed.index("hue family") < printed.index("texture family") and "shape family" not in printed
    assert printed.count("\nthe support ") == 2 and "NOT met" not in printed  # each family's verdict in words
    (folder,) = tmp_path.iterdir()
    results = json.loads((folder / "demo_results.json").read_text())["families"]
    assert list(results) == ["hue", "texture"]
    for name, family in results.items():
        # hue also shows the training-free GF-SAM and its swap control
        assert len(family["rows"]) == (7 if name == "hue" else 5) and family["support_gap"]["gap_episodes"] == 8
        assert Path(family["best_checkpoint"]).is_file()
    assert set(demo.GFSAM_ROWS) <= set(results["hue"]["rows"]) and printed.count("GF-SAM, training-free") == 1
    gfsam = json.loads((folder / "hue" / "gfsam" / "test_metrics.json").read_text())
    assert gfsam["method"] == "GFSAM" and gfsam["ckpt_path"] is None


@pytest.mark.slow
def test_the_sansa_demo_shows_its_own_rows_from_the_same_tiny_sam2(tmp_path, capsys):
    demo = load_script("demo")
    short = [
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
        "--trainer.check_val_every_n_epoch=1", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--data.init_args.test_episodes=16", "--data.init_args.gap_episodes=8", "--data.init_args.pool_sizes=[200,40,80]",
    ]  # fmt: skip
    demo.main(["--method", "sansa", "--runs", str(tmp_path), "--jobs", "1", "--", *short])
    printed = capsys.readouterr().out
    assert "hue family" in printed and "shape family" not in printed  # SANSA's default: hue
    assert "SANSA meta-trained (adapters)" in printed and "FS-SAM2" not in printed
    (folder,) = tmp_path.iterdir()
    (family,) = json.loads((folder / "demo_results.json").read_text())["families"].values()
    test_metrics = json.loads((folder / "hue" / "test" / "test_metrics.json").read_text())
    assert test_metrics["method"] == "SANSA" and family["trained_row"] == "SANSA meta-trained (adapters)"
    assert len(family["rows"]) == 7 and "meta-trained - swap" in family["checks"]  # GF-SAM's two rows on hue
    assert family["verdict"].startswith("the support")


def test_the_pointer_loss_trains_what_only_sansas_forward_reads():
    from fssam2.methods import SANSA, AdapterConfig

    script = load_script("pretrain_tracking")
    torch.manual_seed(0)
    model = FewShotSAM2(build_sam2("fssam2_tiny", image_size=64))
    sansa = SANSA(model.sam2, AdapterConfig(stages=())).train()
    model.sam2.requires_grad_(True)
    video = script.world_of("varied", 64, seed=0)
    images0, masks0, images1, targets = script.batch_of(video, range(4), 1.0, 64)
    feats = model.encode_images(torch.cat([images0.flatten(0, 1), images1]))
    script.pointer_tracking_loss(sansa, feats, masks0, targets).backward()
    sam2 = model.sam2
    for name, param in (
        ("obj_ptr_proj", next(sam2.obj_ptr_proj.parameters())),
        ("maskmem_tpos_enc", sam2.maskmem_tpos_enc),
        ("mask_downsample", sam2.mask_downsample.weight),
    ):
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert sam2.sam_mask_decoder.obj_score_token.weight.grad is None  # SANSA's decoder does not read it


@pytest.mark.slow
def test_the_weak_supports_table_has_every_row_with_its_swap_control(tmp_path, capsys):
    """experiments/weak_supports.py, cut to a few steps: both models, every row of the table, the
    1-shot rows with a swap control over every test episode, and the checks."""
    script = load_script("weak_supports")
    short = [
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
        "--trainer.check_val_every_n_epoch=1", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--data.init_args.test_episodes=8", "--data.init_args.pool_sizes=[600,60,120]",
    ]  # fmt: skip
    script.main(["--runs", str(tmp_path), "--jobs", "2", "--shots", "1", "3", "--", *short])
    printed = capsys.readouterr().out
    assert "mixed - masks model, 5-shot mask" in printed and "scribble" in printed
    (folder,) = tmp_path.iterdir()
    models = json.loads((folder / "weak_supports.json").read_text())["models"]
    rows = [r for m in models.values() for r in m["rows"]]
    assert [(r["model"], r["annotation"], r["shot"]) for r in rows] == [
        (name, annotation, shot) for name, tests in script.TESTS.items() for annotation, shot, _ in tests
    ]
    for r in rows:
        assert r["support_annotation"] == r["annotation"]  # what test_metrics.json recorded
        assert (r["support_mask_iou"] is None) == (r["annotation"] == "mask")
        if r["shot"] == 1:
            assert r["gap_episodes"] == r["episodes"] == 8  # the swap control on every episode
