import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from fssam2 import build_sam2  # noqa: E402

TESTS = Path(__file__).parent
SHARED = TESTS.parent.parent / "shared"


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


def make_episode(batch: int, shot: int, size: int = 128, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    support_images = torch.randn(batch, shot, 3, size, size, generator=g)
    query_images = torch.randn(batch, 3, size, size, generator=g)
    # blob-like masks: a random rectangle per support
    masks = torch.zeros(batch, shot, size, size)
    for b in range(batch):
        for k in range(shot):
            y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
            h, w = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
            masks[b, k, y : y + h, x : x + w] = 1
    return support_images, masks, query_images


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line_error(capsys, args: list[str], message: str) -> str:
    """Run the CLI expecting exit 2 with one stderr line that holds `message`; returns stderr."""
    from fssam2.cli import run_cli

    with pytest.raises(SystemExit) as exit_:
        run_cli(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err
