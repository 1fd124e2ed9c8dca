"""Helpers the tests import (`from helpers import ...`); fixtures live in conftest.py, which no test imports."""

import importlib.util
import socket
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
SHARED = TESTS.parent.parent / "shared"
TINY = TESTS / "configs" / "tiny.yaml"


def load_script(name: str, monkeypatch: pytest.MonkeyPatch):
    """experiments/<name>.py as a module (registered while the test runs: its dataclasses need that)."""
    spec = importlib.util.spec_from_file_location(name, TESTS.parent / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


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


class PublishedPascal:
    """PASCAL-5i's test episodes from the published split lists alone (no images): each image shows
    the classes its lists name, so the episodes, the plan and its support-gap items are the real fold's."""

    def __new__(cls, splits_dir: Path, **kwargs):
        from fssam2.benchmarks import fold_lists
        from fssam2.data import FewShotDataModule
        from fssam2.episodes import QueryCycleEpisodes

        class Lists(FewShotDataModule):
            def episodes(self, split):
                images, by_class = fold_lists(splits_dir, "pascal", "test", self.fold)
                present: dict[str, list[int]] = {}
                for c, ids in by_class.items():
                    for i in ids:
                        present.setdefault(i, []).append(c)
                return QueryCycleEpisodes(images, by_class, present, self.class_ids(split), self.shot,
                                          self.split_seed(split), self.test_episodes)  # fmt: skip

            def class_ids(self, split):
                return list(range(5 * self.fold + 1, 5 * self.fold + 6))

            def image_reader(self, split):
                return None  # the plan reads no image

        return Lists(**kwargs)


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
