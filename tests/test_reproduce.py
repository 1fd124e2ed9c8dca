"""`make reproduce` with its smoke setting: the whole pipeline on generated data, then the table."""

import sys
from pathlib import Path

import pytest

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
    assert "[reproduce]" not in capsys.readouterr().out  # everything finished is skipped
    assert [f.stat().st_mtime_ns for f in fits] == stamps


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
