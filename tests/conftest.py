"""Fixtures for every test: homes and caches isolated per test, the tiny SAM2, and one trained tiny
run per test session. What tests import (make_episode, one_line_error, TESTS, ...) is in helpers.py."""

import copy
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "all")  # every time, not once per process

from fssam2 import FewShotSAM2, build_sam2  # noqa: E402
from helpers import TINY  # noqa: E402
from helpers import free_port as loopback_port

# huggingface_hub reads its cache folders and offline switch at import, so they are patched as well as set.
HF_CONSTANTS = ("HF_HOME", "HF_HUB_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE", "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH")
WANDB_DIRS = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR")


def isolate_homes(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Point every home the code and its libraries write to at `folder`: the SAM2 cache ($FSSAM2_HOME),
    the data home (its default under it: $FSSAM2_DATA unset), $XDG_CACHE_HOME, the Hugging Face
    Hub's cache (offline) and W&B's folders. Nothing is created until something writes there."""
    from huggingface_hub import constants

    monkeypatch.setenv("FSSAM2_HOME", str(folder / "fssam2"))
    monkeypatch.delenv("FSSAM2_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
    hf_home = folder / "huggingface"
    hf = {
        "HF_HOME": hf_home,
        "HF_HUB_CACHE": hf_home / "hub",
        "HF_ASSETS_CACHE": hf_home / "assets",
        "HF_XET_CACHE": hf_home / "xet",
        "HF_TOKEN_PATH": hf_home / "token",
        "HF_STORED_TOKENS_PATH": hf_home / "stored_tokens",
    }
    for name in HF_CONSTANTS:
        monkeypatch.setenv(name, str(hf[name]))
        if hasattr(constants, name):  # not every huggingface_hub 2.x has every one
            monkeypatch.setattr(constants, name, str(hf[name]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a test that means to reach a (loopback) Hub says so
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for name in WANDB_DIRS:  # also undoes the CLI's setting of them for an earlier test's run
        monkeypatch.setenv(name, str(folder / "wandb" / name.removeprefix("WANDB_").lower()))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's homes and caches are its own empty folder (see isolate_homes), never the user's."""
    folder = tmp_path_factory.mktemp("home")
    isolate_homes(monkeypatch, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sam2_state() -> dict:
    """Weights of the tiny SAM2, random but seeded, shared by tests that need a fresh copy."""
    torch.manual_seed(0)
    return build_sam2("fssam2_tiny").state_dict()


@pytest.fixture
def tiny_sam2(tiny_sam2_state):
    model = build_sam2("fssam2_tiny")
    model.load_state_dict(tiny_sam2_state)
    return model


@pytest.fixture
def free_port() -> int:
    return loopback_port()


@dataclass(frozen=True)
class TrainedRun:
    """The files of one `fssam2 fit` (read-only: write elsewhere) and the model it trained."""

    run_dir: Path  # the fit's --trainer.default_root_dir
    base: Path  # the SAM2 checkpoint it started from (--model.sam2_checkpoint)
    best: Path  # checkpoints/best.ckpt
    last: Path  # checkpoints/last.ckpt
    _model: FewShotSAM2

    @property
    def tiny_options(self) -> tuple[str, ...]:
        """What a command given tests/configs/tiny.yaml (random initialisation) and --ckpt_path of this run
        adds, lest the config's model.sam2_checkpoint conflict with the checkpoint's."""
        return ("--model.sam2_checkpoint", str(self.base))

    def model(self) -> FewShotSAM2:
        """A fresh copy of the trained model as it was in memory at the end of the fit, in eval mode."""
        return copy.deepcopy(self._model)


@contextmanager
def untouched_globals() -> Iterator[None]:
    """Restore the environment and the random generators a run changes (seed_everything, W&B's folders),
    so a session fixture's run leaves the tests after it as they would be without it."""
    environ = dict(os.environ)
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environ)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """One LoRA fit of the tiny SAM2 (tests/configs/tiny.yaml, 1 epoch, from a saved random base
    checkpoint) through the real CLI, made once per test session for every test that needs a trained
    checkpoint. Tests that test `fit` itself run their own."""
    from fssam2.cli import run_cli

    root = tmp_path_factory.mktemp("trained_run")
    with untouched_globals(), pytest.MonkeyPatch.context() as monkeypatch:
        isolate_homes(monkeypatch, root / "home")
        torch.manual_seed(3)
        base = root / "base.pt"
        torch.save({"model": build_sam2("fssam2_tiny").state_dict()}, base)
        run_dir = root / "run"
        fit = run_cli([
            "fit", "--config", str(TINY), "--model.sam2_checkpoint", str(base),
            "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(run_dir),
        ])  # fmt: skip
        model = copy.deepcopy(fit.model.model).eval()
    run = TrainedRun(run_dir, base, run_dir / "checkpoints" / "best.ckpt", run_dir / "checkpoints" / "last.ckpt", model)
    for path in (run.base, run.best, run.last):
        path.chmod(0o444)  # shared by many tests: one that writes over them fails instead of changing the others
    return run
