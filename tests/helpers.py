"""Helpers the tests import (`from helpers import ...`); fixtures live in conftest.py, which no test imports."""

import socket
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
SHARED = TESTS.parent.parent / "shared"
TINY = TESTS / "configs" / "tiny.yaml"


def make_episode(batch: int, shot: int, size: int = 128, seed: int = 0):
    """Random support images, blob-like support masks (a random rectangle each) and query images."""
    g = torch.Generator().manual_seed(seed)
    support_images = torch.randn(batch, shot, 3, size, size, generator=g)
    query_images = torch.randn(batch, 3, size, size, generator=g)
    masks = torch.zeros(batch, shot, size, size)
    for b in range(batch):
        for k in range(shot):
            y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
            h, w = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
            masks[b, k, y : y + h, x : x + w] = 1
    return support_images, masks, query_images


def one_line_error(capsys, args: list[str], message: str) -> str:
    """Run the CLI expecting exit 2 with one stderr line that holds `message`; returns stderr."""
    from fssam2.cli import run_cli

    with pytest.raises(SystemExit) as exit_:
        run_cli(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
