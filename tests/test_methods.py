"""Methods as plug-ins (fssam2.methods): the interface FS-SAM2 implements, the method chosen by
class path, and checkpoints written before methods existed still testing to the same numbers."""

import json

import pytest
import torch

import fssam2
from fssam2.cli import run_cli
from fssam2.methods import FewShotMethod, FewShotSAM2
from fssam2.module import FSSAM2Module
from helpers import TINY, make_episode, one_line_error

# FSSAM2Module's hyperparameters before `model.method` existed: what a checkpoint of that code holds.
OLD_HPARAMS = {
    "sam2_config", "sam2_checkpoint", "image_size", "lora", "trainable", "lr", "weight_decay", "betas",
    "feature_cache", "merge_lora", "compile", "encoder_batch",
}  # fmt: skip


def test_the_public_fewshotsam2_is_the_method():
    assert fssam2.FewShotSAM2 is FewShotSAM2 and issubclass(FewShotSAM2, FewShotMethod)


def test_support_then_query_steps_equal_the_batched_forward():
    torch.manual_seed(0)
    method = FewShotSAM2.build("fssam2_tiny", None, 64).eval()
    support_images, support_masks, query_images = make_episode(2, 2, size=64)
    with torch.no_grad():
        steps = method.segment(query_images, method.encode_support(support_images, support_masks))
        batched = method(support_images, support_masks, query_images)
    torch.testing.assert_close(steps, batched, rtol=1e-4, atol=1e-4)


def test_fssam2_trains_only_lora_and_keeps_its_adapter_state_through_evaluation():
    torch.manual_seed(0)
    method = FewShotSAM2.build("fssam2_tiny", None, 64)
    trainable = {id(p) for p in method.trainable_parameters()}
    assert trainable == {id(p) for n, p in method.named_parameters() if "lora_" in n}
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(0.01)  # LoRA B starts at 0: a merge would change nothing
    before = {k: v.clone() for k, v in method.state_dict().items()}
    method.start_evaluation()  # LoRA merged
    assert any(not torch.equal(before[k], v) for k, v in method.state_dict().items())
    saved = method.checkpoint_state()
    assert saved and all(torch.equal(before[k], v) for k, v in saved.items())  # the unmerged weights
    method.end_evaluation()
    assert all(torch.equal(before[k], v) for k, v in method.state_dict().items())
    adapter = method.adapter_state()
    other = FewShotSAM2.build("fssam2_tiny", None, 64)
    other.load_adapter_state(adapter)
    assert all(torch.equal(v, other.adapter_state()[k]) for k, v in adapter.items())


def test_the_options_its_weights_fix_come_from_the_method():
    from fssam2.cli.app import checkpoint_fixes

    assert checkpoint_fixes({}) == ("method", *FewShotSAM2.FIXED_BY_WEIGHTS)
    assert {"lora", "trainable", "sam2_config"} <= set(FewShotSAM2.FIXED_BY_WEIGHTS)


def test_a_method_that_is_not_a_method_class_is_one_line(capsys, tmp_path):
    args = ["fit", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path), "--model.method"]
    one_line_error(capsys, [*args, "torch.nn.Linear"], "model.method=torch.nn.Linear is not a few-shot method class")
    one_line_error(capsys, [*args, "no.such.Method"], "model.method=no.such.Method is not a few-shot method class")
    err = one_line_error(capsys, [*args, "fssam2.methods.Sansa"], "did you mean fssam2.methods.SANSA?")
    assert "model.method=fssam2.methods.Sansa is not a few-shot method class" in err
    err = one_line_error(capsys, [*args, "fssam2.methods.Nope"], "model.method=fssam2.methods.Nope is not a few-shot")
    assert "did you mean" not in err
    for bare, meant in (
        ("gfsam", "GFSAM"),
        ("GFSAM", "GFSAM"),
        ("sansa", "SANSA"),
        ("my.module.FewShotSam2", "FewShotSAM2"),
    ):
        one_line_error(
            capsys,
            [*args, bare],
            f"model.method={bare} is not a few-shot method class: did you mean fssam2.methods.{meant}?",
        )


@pytest.mark.slow
def test_a_checkpoint_written_before_methods_tests_to_the_same_numbers(trained_run, tmp_path):
    """A checkpoint with today's-main hyperparameters (no `method`) loads with --ckpt_path and tests
    to exactly the numbers of the same weights saved by this code."""
    new = torch.load(trained_run.best, map_location="cpu", weights_only=False)
    assert new["hyper_parameters"]["method"] == "fssam2.methods.FewShotSAM2"
    old = dict(
        new, hyper_parameters={k: v for k, v in new["hyper_parameters"].items() if k not in ("method", "method_args")}
    )
    assert set(old["hyper_parameters"]) - {"_instantiator"} == OLD_HPARAMS  # _instantiator: LightningCLI's own
    torch.save(old, tmp_path / "old.ckpt")
    results = {}
    for name, ckpt in (("new", trained_run.best), ("old", tmp_path / "old.ckpt")):
        run = run_cli(["test", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path / name),
                       "--ckpt_path", str(ckpt), "--model.sam2_checkpoint", str(trained_run.base)])  # fmt: skip
        assert isinstance(run.model, FSSAM2Module) and isinstance(run.model.model, FewShotSAM2)
        results[name] = json.loads((tmp_path / name / "test_metrics.json").read_text())
        del results[name]["ckpt_path"]
    assert results["old"] == results["new"]
