"""The suite's own habits: every test's homes and caches are its own, and tests import helpers.py, not conftest."""

import os
import re

import pytest

from fssam2 import hub
from fssam2.cli import run_cli
from helpers import TESTS


@pytest.mark.parametrize("turn", [1, 2])
def test_every_test_has_empty_homes_of_its_own(isolated_home, capsys, turn):
    """Run twice: a file the first turn writes to the SAM2 cache would be seen by the second if homes were shared."""
    from huggingface_hub import constants

    assert hub.cache_dir() == isolated_home / "fssam2" and not hub.cache_dir().exists()
    assert hub.data_dir() == isolated_home / "fssam2" / "data" and "FSSAM2_DATA" not in os.environ
    for folder in (constants.HF_HOME, constants.HF_HUB_CACHE, os.environ["HF_HUB_CACHE"], os.environ["XDG_CACHE_HOME"]):
        assert os.path.commonpath([folder, isolated_home]) == str(isolated_home), folder
    assert constants.is_offline_mode()
    hub.cache_dir().mkdir(parents=True)
    (hub.cache_dir() / "sam2.1_hiera_b+.pt.part").write_bytes(b"\0" * 2**20)
    run_cli(["doctor"])  # without a config the empty data home is information, not a failure
    out = capsys.readouterr().out
    assert f"data home {isolated_home / 'fssam2' / 'data'} (default" in out
    assert "1 MB of it in sam2.1_hiera_b+.pt.part" in out  # the CLI reads this test's SAM2 cache


def test_no_test_imports_conftest():
    """Helpers live in helpers.py; conftest.py holds fixtures, which pytest hands to tests by name."""
    importing = [p.name for p in TESTS.glob("*.py") if re.search(r"^\s*(from|import) conftest\b", p.read_text(), re.M)]
    assert importing == [], f"{importing} import conftest: import from helpers instead"


def test_the_shared_trained_run_hands_out_copies_of_what_it_saved(trained_run):
    """conftest's one fit per session: its files are marked read-only, and each model() is a fresh copy
    of the trained weights, which equal last.ckpt's."""
    import torch

    for path in (trained_run.base, trained_run.best, trained_run.last):
        assert path.is_file() and path.stat().st_mode & 0o222 == 0, path
    saved = torch.load(trained_run.last, map_location="cpu", weights_only=False)["state_dict"]
    first, second = trained_run.model(), trained_run.model()
    assert not first.training
    for name, value in first.state_dict().items():
        assert torch.equal(value, saved[f"model.{name}"]), name
    lora_b = next(p for n, p in first.named_parameters() if n.endswith("lora_B"))
    assert lora_b.abs().sum() > 0  # trained
    with torch.no_grad():
        lora_b.zero_()
    assert next(p for n, p in second.named_parameters() if n.endswith("lora_B")).abs().sum() > 0
