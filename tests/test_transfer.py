"""experiments/transfer.py: the hidden glyph family, written as a folder dataset, and its oracle."""

import importlib.util
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from fssam2 import build_sam2
from fssam2.benchmarks import FolderDataModule

ROOT = Path(__file__).resolve().parent.parent


def load_transfer(monkeypatch, images: int):
    spec = importlib.util.spec_from_file_location("transfer", ROOT / "experiments" / "transfer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "TRAIN_IMAGES", images)
    monkeypatch.setattr(module, "TEST_IMAGES", images)
    return module


def test_the_glyph_family_is_a_seeded_folder_dataset_with_distractors(tmp_path, monkeypatch):
    transfer = load_transfer(monkeypatch, 4)
    transfer.write_family(tmp_path / "a" / "glyphs", seed=0)
    transfer.write_family(tmp_path / "b" / "glyphs", seed=0)
    letters = sorted(p.name for p in (tmp_path / "a" / "glyphs").iterdir())
    assert letters == sorted(transfer.LETTERS)
    with_distractor = 0
    for letter in letters:
        for n in range(4):
            files = [f"{letter}/{n}.jpg", f"{letter}/{n}.png"]
            for f in files:
                assert (tmp_path / "a" / "glyphs" / f).read_bytes() == (tmp_path / "b" / "glyphs" / f).read_bytes()
            mask = np.array(Image.open(tmp_path / "a" / "glyphs" / files[1])) > 0
            every = np.array(Image.open(tmp_path / "a" / "objects" / letter / f"{n}.png")) > 0
            assert mask.sum() >= 60 and not (mask & ~every).any(), "the class's letter is one of the objects"
            with_distractor += int((every & ~mask).sum() > 30)
    assert with_distractor >= 70, "nearly every image shows another letter too"


def test_the_oracle_scores_every_letter_over_the_test_episodes(tmp_path, monkeypatch):
    transfer = load_transfer(monkeypatch, 4)
    transfer.write_family(tmp_path / "glyphs", seed=0)
    dm = FolderDataModule(root=str(tmp_path / "glyphs"), fold=0, num_folds=4, shot=1, num_workers=0)
    cli = SimpleNamespace(datamodule=dm)
    result = transfer.oracle(cli, tmp_path / "objects")
    assert result["episodes"] == 5 * 4 and 0 < result["miou"] < 100
    # With "every object" equal to the class's own mask, the oracle is the target itself.
    shutil.rmtree(tmp_path / "objects")
    shutil.copytree(tmp_path / "glyphs", tmp_path / "objects")
    assert transfer.oracle(cli, tmp_path / "objects")["miou"] == 100.0


class Started(Exception):
    """Raised by a stand-in for the first CLI run, with its arguments."""


def test_transfer_starts_from_the_tiny_sam2_it_is_given(tmp_path, capsys, monkeypatch):
    transfer = load_transfer(monkeypatch, 4)
    mine = tmp_path / "mine.pt"
    torch.save({"model": build_sam2("fssam2_tiny").state_dict()}, mine)
    monkeypatch.setattr(transfer, "write_family", lambda root, seed: None)

    def run(args):
        raise Started(args)

    monkeypatch.setattr(transfer, "run", run)
    with pytest.raises(Started) as started:
        transfer.main(["--runs", str(tmp_path / "runs"), "--sam2-checkpoint", str(mine)])
    args = started.value.args[0]
    assert args[args.index("--model.sam2_checkpoint") + 1] == str(mine.resolve())
    (tmp_path / "not.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as refused:
        transfer.main(["--runs", str(tmp_path / "runs"), "--sam2-checkpoint", str(tmp_path / "not.pt")])
    assert refused.value.code == 2 and "not.pt" in capsys.readouterr().err
