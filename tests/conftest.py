"""Fixtures for every test; what tests import (make_episode, one_line_error, TESTS, ...) is in helpers.py."""

import os

import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from fssam2 import build_sam2  # noqa: E402


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
