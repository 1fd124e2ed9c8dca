"""`make reproduce` with its smoke setting: the whole pipeline on generated data, then the table."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "experiments"))
import reproduce  # noqa: E402


@pytest.mark.slow
def test_smoke_reproduction_writes_the_table_and_resumes(tmp_path, capsys):
    out = tmp_path / "repro"
    reproduce.main(["--smoke", "--out", str(out)])
    table = (out / "results.md").read_text()
    for title in ("## PASCAL-5i", "## COCO-20i", "## COCO->PASCAL", "## FSS-1000"):
        assert title in table
    pascal_1shot = next(
        line for line in table.splitlines()[table.splitlines().index("## PASCAL-5i") :] if line.startswith("| 1 |")
    )
    cells = [c.strip() for c in pascal_1shot.strip("|").split("|")]
    assert len(cells) == 6 and all("(" in c for c in cells[1:])  # every fold next to the published number
    assert "–" not in table
    fits = sorted(out.glob("*/fit_done"))
    assert len(fits) == 9  # 4 PASCAL + 4 COCO folds + FSS-1000; COCO->PASCAL reuses the COCO models
    stamps = [f.stat().st_mtime_ns for f in fits]
    capsys.readouterr()
    reproduce.main(["--smoke", "--out", str(out)])
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[reproduce]")]
    assert said == [f"[reproduce] table: {out / 'results-1.md'}"]  # everything finished is skipped
    assert [f.stat().st_mtime_ns for f in fits] == stamps
    assert (out / "results.md").read_text() == table  # the earlier table is kept, the new one beside it


def test_table_marks_missing_runs_and_differences(tmp_path):
    run = tmp_path / "pascal_fold0" / "test_1shot"
    run.mkdir(parents=True)
    (run / "test_metrics.json").write_text('{"miou": 75.5}')
    table = reproduce.results_table(tmp_path, ["pascal"])
    assert "| 1 | 75.5 (+1.5) | – | – | – | – |" in table


def test_prepare_order_puts_the_manual_step_first():
    assert reproduce.prepare_order(["pascal", "coco", "fss1000", "coco2pascal"]) == [
        "fss1000",
        "splits",
        "pascal",
        "coco",
    ]
    assert reproduce.prepare_order(["coco2pascal", "coco"]) == ["splits", "pascal", "coco"]


def test_no_data_options_prepare_the_data_home_before_any_run(tmp_path, monkeypatch, capsys):
    """With an empty data home, the first prepare step (FSS-1000's archive needs a manual download)
    stops the reproduction with one line naming what to fetch, before anything runs."""
    monkeypatch.setenv("FSSAM2_DATA", str(tmp_path / "home"))
    monkeypatch.setattr(reproduce, "fssam2", lambda *a: pytest.fail("a run started before the data was prepared"))
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main(["--benchmarks", "fss1000", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fssam2: error:") and "fewshot_data.zip" in err[0]
    assert f"[reproduce] fssam2 prepare fss1000 --root {tmp_path / 'home'}" in captured.out


@pytest.mark.slow
def test_an_interrupted_fit_is_resumed_and_its_final_choice_tested(tmp_path, monkeypatch):
    """A fit killed after its first epoch's checkpoints: the next `make reproduce` resumes it from
    last.ckpt (no best-v1.ckpt beside it) and tests the best checkpoint the finished fit chose."""
    smoke = list(reproduce.SMOKE)
    smoke[smoke.index("--trainer.max_epochs") + 1] = "2"
    monkeypatch.setattr(reproduce, "SMOKE", smoke)
    out, marker = tmp_path / "repro", tmp_path / "killpoint"
    root, splits = reproduce.generate_smoke_data(out)
    run_dir = out / "fss1000"
    common = ["--data.root", str(root), "--data.splits_dir", str(splits), *smoke]
    kill_at = {"class_path": "killpoint.KillPoint", "init_args": {"marker": str(marker), "epoch": 1, "batch": 0}}
    cmd = [*reproduce.fit_args("fss1000", common, run_dir), "--trainer.callbacks+=" + json.dumps(kill_at)]
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
    with open(tmp_path / "fit.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "fssam2.cli", *cmd], env=env, stderr=err)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, (tmp_path / "fit.err").read_text()[-3000:]
            assert time.monotonic() < deadline, "the fit never reached epoch 1"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL, as a lost machine
        proc.wait(timeout=60)
    checkpoints = run_dir / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 0

    reproduce.main(["--smoke", "--benchmarks", "fss1000", "--out", str(out)])
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (1, 4)  # the fit went on to its end
    chosen = next(state for key, state in last["callbacks"].items() if "val/miou" in key)["best_model_path"]
    for shot in reproduce.SHOTS:
        results = json.loads((run_dir / f"test_{shot}shot" / "test_metrics.json").read_text())
        assert results["ckpt_path"] == chosen == str(checkpoints / "best.ckpt")


@pytest.mark.slow
def test_smoke_reproduction_of_sansa_uses_its_configs_and_published_numbers(tmp_path):
    out = tmp_path / "repro"
    reproduce.main(["--smoke", "--method", "sansa", "--benchmarks", "fss1000", "--out", str(out)])
    table = (out / "results.md").read_text()
    assert table.startswith("# SANSA reproduction")
    one, five = (line for line in table.splitlines() if line.startswith(("| 1 |", "| 5 |")))
    assert "(" in one and "(" not in five  # 1-shot beside SANSA's 91.4; no published 5-shot number
    for shot in (1, 5):
        metrics = json.loads((out / "fss1000" / f"test_{shot}shot" / "test_metrics.json").read_text())
        assert metrics["method"] == "SANSA" and metrics["shot"] == shot


@pytest.mark.slow
def test_smoke_reproduction_of_gfsam_tests_without_fitting_beside_its_published_numbers(tmp_path):
    out = tmp_path / "repro"
    reproduce.main(["--smoke", "--method", "gfsam", "--benchmarks", "fss1000", "--out", str(out)])
    table = (out / "results.md").read_text()
    assert table.startswith("# GF-SAM reproduction")
    one, five = (line for line in table.splitlines() if line.startswith(("| 1 |", "| 5 |")))
    assert "(" in one and "(" in five  # beside GF-SAM's 88.0 and 88.9
    assert not (out / "fss1000" / "checkpoints").exists() and not (out / "fss1000" / "fit_done").exists()
    for shot in (1, 5):
        metrics = json.loads((out / "fss1000" / f"test_{shot}shot" / "test_metrics.json").read_text())
        assert metrics["method"] == "GFSAM" and metrics["shot"] == shot and metrics["ckpt_path"] is None


def test_a_benchmark_a_method_has_no_config_for_is_refused(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--smoke", "--method", "sansa", "--benchmarks", "coco2pascal"])
    assert "SANSA has configs for pascal coco fss1000" in capsys.readouterr().err
