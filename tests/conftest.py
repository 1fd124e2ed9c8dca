"""Fixtures for every test: homes and caches isolated per test, and the tiny SAM2.
What tests import (make_episode, one_line_error, TESTS, ...) is in helpers.py."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "all")  # every time, not once per process

from fssam2 import build_sam2  # noqa: E402

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
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
