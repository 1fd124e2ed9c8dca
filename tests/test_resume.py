"""Exact resume after a real SIGKILL, atomic checkpoints, and non-finite losses: the real
`fssam2 fit` in subprocesses, with test-only callbacks from tests/killpoint.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fssam2.callbacks import AtomicCheckpointIO, RunCheckpoint
from fssam2.data import SyntheticDataModule
from fssam2.episodes import EpisodeSampler
from helpers import TESTS

TINY = str(TESTS / "configs" / "tiny.yaml")
_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_survivors():
    """A test that fails early leaves no fit behind (one may be sleeping at a kill point)."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: DDP's rank 1 goes too
            proc.wait()


def start_fit(run_dir: Path, *args: str, callbacks: dict | None = None) -> subprocess.Popen:
    """`fssam2 fit` on tiny.yaml for 3 epochs without logger, output in <run_dir>.out / .err;
    `callbacks` maps killpoint class names to their init args."""
    cmd = [sys.executable, "-m", "fssam2.cli", "fit", "--config", TINY, "--trainer.default_root_dir", str(run_dir)]
    cmd += ["--trainer.max_epochs", "3", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", *args]
    for name, init_args in (callbacks or {}).items():
        cmd.append("--trainer.callbacks+=" + json.dumps({"class_path": f"killpoint.{name}", "init_args": init_args}))
    # A killed process leaves its temporary files behind: keep them in the test's folder.
    (run_dir.parent / "tmp").mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        "TMPDIR": str(run_dir.parent / "tmp"),
    }
    with open(f"{run_dir}.out", "w") as out, open(f"{run_dir}.err", "w") as err:
        _started.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=err, start_new_session=True))
    return _started[-1]


def finish(proc: subprocess.Popen, run_dir: Path, status: int = 0) -> str:
    """Waits for the fit; checks its exit status; returns its stderr."""
    proc.wait(timeout=600)
    err = Path(f"{run_dir}.err").read_text()
    assert proc.returncode == status, err[-3000:]
    return err


def wait_for(path: Path, proc: subprocess.Popen, run_dir: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"fit ended before {path.name}:\n" + Path(f"{run_dir}.err").read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.02)


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same(a, b, where: str = "") -> None:
    """Exact equality of nested checkpoint content (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def test_atomic_checkpoint_io(tmp_path):
    """A failed save leaves the previous file and no .tmp; RunCheckpoint installs it in place of
    Lightning's default only."""
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 0}, path)
    with pytest.raises(Exception, match="pickle"):
        io.save_checkpoint({"epoch": 1, "unpicklable": lambda: None}, path)
    assert io.load_checkpoint(path) == {"epoch": 0} and os.listdir(path.parent) == ["last.ckpt"]

    class Custom(TorchCheckpointIO):
        pass

    for plugins, installed in (([], AtomicCheckpointIO), ([Custom()], Custom)):  # a user's own CheckpointIO stays
        checkpoint = RunCheckpoint(filename="last")
        trainer = L.Trainer(default_root_dir=tmp_path / "run", logger=False, callbacks=[checkpoint], plugins=plugins)
        checkpoint.setup(trainer, None, "fit")
        assert type(trainer.strategy.checkpoint_io) is installed


@pytest.mark.slow
def test_fit_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(tmp_path):
    ckpts_a, ckpts_b = tmp_path / "A" / "checkpoints", tmp_path / "B" / "checkpoints"
    marker = tmp_path / "B.killpoint"
    # A runs uninterrupted while B runs until batch 2 of epoch 1 (0-based), where it waits to be killed.
    a = start_fit(tmp_path / "A", callbacks={"MetricsDump": {"path": str(tmp_path / "A.metrics.json")}})
    b = start_fit(tmp_path / "B", callbacks={"KillPoint": {"marker": str(marker), "epoch": 1, "batch": 2}})
    wait_for(marker, b, tmp_path / "B", timeout=600)
    assert marker.read_text() == "6"  # 4 steps of epoch 0, 2 of epoch 1 done
    assert load(ckpts_b / "last.ckpt")["epoch"] == 0
    kill(b)
    b = start_fit(
        tmp_path / "B",
        "--ckpt_path",
        str(ckpts_b / "last.ckpt"),
        callbacks={"MetricsDump": {"path": str(tmp_path / "B.metrics.json")}},
    )
    assert "Restored all states" in finish(b, tmp_path / "B")
    finish(a, tmp_path / "A")

    # The resumed run keeps writing best.ckpt and last.ckpt (no last-v1.ckpt, no leftover .tmp).
    assert sorted(p.name for p in ckpts_b.iterdir()) == ["best.ckpt", "last.ckpt"]
    for name in ("last.ckpt", "best.ckpt"):
        ckpt_a, ckpt_b = load(ckpts_a / name), load(ckpts_b / name)
        assert ckpt_a["global_step"] == ckpt_b["global_step"] and ckpt_a["epoch"] == ckpt_b["epoch"], name
        assert_same(ckpt_a["state_dict"], ckpt_b["state_dict"], f"{name}:state_dict")
        assert_same(ckpt_a["optimizer_states"], ckpt_b["optimizer_states"], f"{name}:optimizer_states")
        assert_same(ckpt_a["lr_schedulers"], ckpt_b["lr_schedulers"], f"{name}:lr_schedulers")
        best_a, best_b = (next(v for k, v in ckpt["callbacks"].items() if "val/miou" in k) for ckpt in (ckpt_a, ckpt_b))
        assert best_a["best_model_score"] == best_b["best_model_score"], name
        assert Path(best_b["best_model_path"]) == ckpts_b / "best.ckpt"
    assert load(ckpts_b / "last.ckpt")["global_step"] == 12  # 3 epochs of 4 steps
    # The final metrics (validation of epoch 2, training means of epoch 2) are equal bit for bit.
    metrics_a = json.loads((tmp_path / "A.metrics.json").read_text())
    metrics_b = json.loads((tmp_path / "B.metrics.json").read_text())
    assert {"val/miou", "val/loss", "train/loss_epoch"} <= set(metrics_a)
    assert metrics_a == metrics_b


@pytest.mark.slow
def test_kill_while_saving_leaves_the_previous_checkpoint_intact(tmp_path):
    """From epoch 1 on every save carries 300 MB of ballast; the fit is killed at several delays
    after the first such save starts. Whenever it dies, last.ckpt and best.ckpt are either the
    epoch-0 files, byte for byte, or complete new ones; a partial file is only ever a .tmp."""
    landed_mid_write = 0
    for attempt, delay in enumerate((0.5, 0.2, 1.0, 0.05, 2.0)):
        run_dir = tmp_path / f"try{attempt}"
        ckpts, marker = run_dir / "checkpoints", tmp_path / f"try{attempt}.saving"
        proc = start_fit(
            run_dir, "--trainer.max_epochs", "2", callbacks={"SlowSave": {"marker": str(marker), "epoch": 1}}
        )
        wait_for(marker, proc, run_dir, timeout=600)
        # The first epoch-1 save is serialising its ballast: the epoch-0 files are still in place.
        before = {name: (ckpts / name).read_bytes() for name in ("last.ckpt", "best.ckpt")}
        time.sleep(delay)
        kill(proc)

        partial = sorted(p.name for p in ckpts.iterdir() if p.name not in before)
        assert set(partial) <= {".last.ckpt.tmp", ".best.ckpt.tmp"}, partial
        for name, old in before.items():
            ckpt = load(ckpts / name)  # never truncated
            if (ckpts / name).read_bytes() == old:
                assert ckpt["epoch"] == 0 and "ballast" not in ckpt
            else:  # its epoch-1 save completed before the kill
                assert ckpt["epoch"] == 1 and ckpt["ballast"].numel() == 300 * 2**18
                assert f".{name}.tmp" not in partial
        landed_mid_write += bool(partial)
        if landed_mid_write:
            break
    assert landed_mid_write, "no kill landed while a checkpoint was being written"


@pytest.mark.slow
def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    """Training query images are NaN from epoch 1 on: epoch 0 trains and saves, the first step of
    epoch 1 stops the run with status 1 and a one-line message naming epoch, step and episodes."""
    run_dir = tmp_path / "run"
    proc = start_fit(run_dir, "--data.class_path", "killpoint.NaNFromEpoch", "--data.init_args.nan_from_epoch", "1")
    err = finish(proc, run_dir, status=1)

    data = SyntheticDataModule(fold=0, pool_sizes=(150, 60, 60), image_side=64, batch_size=4)
    sampler = EpisodeSampler(len(data.episodes("train")), shuffle=True, seed=data.split_seed("train"))
    sampler.set_epoch(1)
    first_batch = [index for index, _ in list(sampler)[:4]]
    assert "Traceback" not in err and err.count("fssam2: error:") == 1
    assert err.strip().splitlines()[-1] == (
        f"fssam2: error: Non-finite training loss in epoch 1, global step 4, rank 0 (episodes {first_batch}): "
        "lower model.lr or check the data; the last good checkpoint is kept."
    )
    last = load(run_dir / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 0 and last["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.slow
def test_non_finite_loss_on_one_ddp_rank_stops_every_rank(tmp_path):
    """The ranks decide together: rank 1's NaN stops rank 0 too (no rank hangs in backward)."""
    run_dir = tmp_path / "run"
    proc = start_fit(
        run_dir,
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--data.class_path",
        "killpoint.NaNFromEpoch",
        "--data.init_args.nan_rank",
        "1",
    )
    finish(proc, run_dir, status=1)
    data = SyntheticDataModule(fold=0, pool_sizes=(150, 60, 60), image_side=64, batch_size=4)
    sampler = EpisodeSampler(
        len(data.episodes("train")), shuffle=True, seed=data.split_seed("train"), rank=1, world_size=2
    )
    sampler.set_epoch(1)
    rank1 = [index for index, _ in list(sampler)[:4]]
    expected = {
        f"fssam2: error: Non-finite training loss in epoch 1, global step 4, rank {rank} ({where}): "
        "lower model.lr or check the data; the last good checkpoint is kept."
        for rank, where in ((0, "other ranks"), (1, f"episodes {rank1}"))
    }
    deadline = time.monotonic() + 60  # rank 1 is rank 0's child: give it time to write
    while not expected <= set((err := Path(f"{run_dir}.err").read_text()).splitlines()):
        assert time.monotonic() < deadline, err[-3000:]
        time.sleep(0.2)
    assert "Traceback" not in err and err.count("fssam2: error:") == 2
    assert load(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 0
