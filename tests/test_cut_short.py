"""A run cut short by trainer.limit_*_batches: it records what it scored, leaves the classes that
never ran out of the mean, says so in one warning line, and measures the support gap on what it scored."""

import json

import pytest

from fssam2.cli import run_cli
from fssam2.data import SyntheticDataModule
from fssam2.plan import cut_short
from helpers import TINY


@pytest.mark.slow
def test_a_cut_test_records_what_it_scored_and_averages_only_the_classes_that_ran(tmp_path):
    run = tmp_path / "cut"
    with pytest.warns(UserWarning, match=r"test: cut short: scored \d+ of 25 episodes") as caught:
        run_cli(["test", "--config", str(TINY), "--trainer.default_root_dir", str(run),
                 "--data.init_args.gap_episodes", "all", "--trainer.limit_test_batches", "4"])  # fmt: skip
    results = json.loads((run / "test_metrics.json").read_text())
    lines = [str(w.message) for w in caught if "cut short" in str(w.message)]
    assert len(lines) == 1 and "\n" not in lines[0]
    scored, left_out = results["episodes"], results["classes_not_scored"]
    assert 0 < scored < 25 == results["episodes_in_split"]
    assert left_out and f"classes {[int(c) for c in left_out]} never ran" in lines[0]
    assert set(results["per_class"]) == {"1", "2", "3", "4", "5"} - set(left_out)  # no 0.0 for a class that never ran
    assert results["miou"] == pytest.approx(sum(results["per_class"].values()) / len(results["per_class"]))
    # the cut keeps the swapped replays of the episodes it scores: the gap covers every scored episode
    assert results["gap_episodes"] == scored and results["support_gap"] is not None


def test_the_cut_runs_the_replays_of_the_episodes_it_keeps():
    dm = SyntheticDataModule(fold=0, shot=1, num_workers=0, image_side=64, pool_sizes=(150, 60, 60), batch_size=4,
                             test_episodes=25, gap_episodes="all")  # fmt: skip
    dm.image_size = 64
    plan = dm.plan("test")
    full = plan.rank_batches()
    assert plan.rank_batches(limit=len(full)) == full == plan.rank_batches(limit=1.0)
    for limit in (1, 2, 3, 4, 6, 0.5):
        order = plan.rank_batches(limit=limit)
        assert sorted(map(str, order)) == sorted(map(str, full))  # the same batches, reordered
        ran = order[: limit if isinstance(limit, int) else int(len(full) * limit)]
        first_replay = next((k for k, b in enumerate(ran) if b[0].gap), None)
        if first_replay is None:  # no room for an episode batch and its replays: the episodes alone
            assert limit in (1, 2, 3) and ran == full[: len(ran)]
            continue
        scored = {e.index for b in ran[:first_replay] for e in b}
        replayed = {e.index for b in ran if b[0].gap for e in b}
        assert scored and scored <= replayed  # every episode batch before the replays is replayed in the run
    assert cut_short([], [], 3) == []
