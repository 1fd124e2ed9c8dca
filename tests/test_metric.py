"""FewShotIoU against an independent numpy computation, with an ignore region, and under DDP."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fssam2 import FewShotIoU, InputError  # the public API

CLASSES = [6, 7, 8]


def random_batch(seed, n=12, size=(17, 23)):
    rng = np.random.default_rng(seed)
    preds = rng.integers(0, 2, (n, *size))
    target = rng.integers(0, 2, (n, *size))
    target[:, :3, :] = 255  # an ignored band, as PASCAL's boundary
    target[rng.random((n, *size)) < 0.05] = 255
    classes = rng.choice(CLASSES[:2], n)  # class 8 never appears: it has no IoU and is left out of the mean
    return preds, target, classes


def reference(preds, target, classes):
    """Per class: summed intersections and unions of foreground and background, boundary out; a
    class no episode showed is NaN and left out of the mean."""
    stats = {c: np.zeros(4) for c in CLASSES}
    seen = set(classes.tolist())
    for p, t, c in zip(preds, target, classes, strict=True):
        valid = t != 255
        for j, (a, b) in enumerate((((p == 1) & valid, (t == 1) & valid), ((p == 0) & valid, (t == 0) & valid))):
            stats[c][2 * j] += (a & b).sum()
            stats[c][2 * j + 1] += (a | b).sum()
    per_class = [stats[c][0] / max(stats[c][1], 1) if c in seen else np.nan for c in CLASSES]
    fg = sum(s[0] for s in stats.values()) / sum(s[1] for s in stats.values())
    bg = sum(s[2] for s in stats.values()) / sum(s[3] for s in stats.values())
    return 100 * np.nanmean(per_class), 100 * (fg + bg) / 2, 100 * np.array(per_class)


def test_matches_independent_computation_with_ignore():
    metric = FewShotIoU(CLASSES)
    batches = [random_batch(seed) for seed in range(3)]
    for preds, target, classes in batches:
        metric.update(torch.from_numpy(preds), torch.from_numpy(target), torch.from_numpy(classes))
    result = metric.compute()
    miou, fbiou, per_class = reference(*(np.concatenate(x) for x in zip(*batches, strict=True)))
    assert result["miou"].item() == pytest.approx(miou, rel=1e-5)
    assert result["fbiou"].item() == pytest.approx(fbiou, rel=1e-5)
    np.testing.assert_allclose(result["per_class"].numpy(), per_class, rtol=1e-5)
    assert result["per_class"][2].isnan() and result["episodes"].tolist()[2] == 0
    assert result["episodes"].sum() == sum(len(c) for _, _, c in batches)


def test_a_class_with_episodes_but_no_hit_counts_zero_and_one_never_scored_is_left_out():
    metric = FewShotIoU([1, 2, 3])
    metric.update(torch.ones(2, 2, 2), torch.ones(2, 2, 2), torch.tensor([1, 1]))  # class 1: IoU 100
    metric.update(torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.tensor([2]))  # class 2 ran and missed: IoU 0
    result = metric.compute()  # class 3 never ran
    assert result["miou"] == 50 and result["episodes"].tolist() == [2, 1, 0]
    assert result["per_class"][:2].tolist() == [100, 0] and result["per_class"][2].isnan()


def test_ignored_pixels_count_for_neither_class():
    metric = FewShotIoU([1])
    target = torch.tensor([[[1, 255], [0, 0]]])
    metric.update(torch.tensor([[[1, 1], [0, 0]]]), target, torch.tensor([1]))
    perfect = metric.compute()
    assert perfect["miou"] == 100 and perfect["fbiou"] == 100


def test_accumulates_over_episodes_not_per_sample_mean():
    metric = FewShotIoU([1])
    # episode 1: large object, perfect; episode 2: tiny object, missed
    big = torch.zeros(1, 10, 10, dtype=torch.long)
    big[0, :8] = 1
    small = torch.zeros(1, 10, 10, dtype=torch.long)
    small[0, 0, 0] = 1
    metric.update(big, big, torch.tensor([1]))
    metric.update(torch.zeros_like(small), small, torch.tensor([1]))
    assert metric.compute()["miou"].item() == pytest.approx(100 * 80 / 81)  # not (100 + 0) / 2


def test_bad_updates_are_refused():
    metric = FewShotIoU([1, 2])
    with pytest.raises(InputError, match="among the metric's classes"):
        metric.update(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), torch.tensor([3]))
    with pytest.raises(InputError, match="target's size"):
        metric.update(torch.zeros(1, 4, 4), torch.zeros(1, 5, 4), torch.tensor([1]))


def test_predictions_must_be_binary_not_logits():
    preds, target, classes = random_batch(0)
    target = torch.from_numpy(target)
    classes = torch.from_numpy(classes)
    exact = FewShotIoU(CLASSES)
    exact.update(torch.from_numpy(preds), target, classes)
    for binary in (
        torch.from_numpy(preds).float(),
        torch.from_numpy(preds).bool(),
        torch.from_numpy(preds).to(torch.uint8),
    ):
        same = FewShotIoU(CLASSES)
        same.update(binary, target, classes)
        assert same.compute()["miou"] == exact.compute()["miou"]
    logits = torch.randn(*preds.shape, generator=torch.Generator().manual_seed(0))  # negative = background
    for not_binary in (logits, logits.sigmoid(), 255 * torch.from_numpy(preds)):
        metric = FewShotIoU(CLASSES)
        with pytest.raises(InputError, match=r"preds \(torch\.\w+\) hold values other than 0 and 1: .*logits > 0"):
            metric.update(not_binary, target, classes)
        assert metric.inter_fg.sum() == 0  # nothing counted
    with pytest.raises(InputError, match="target holds values other than 0, 1 and ignore_index=255"):
        FewShotIoU(CLASSES).update(torch.from_numpy(preds), 2 * target.clamp(max=1), classes)


@pytest.mark.filterwarnings("error")  # one message, not torchmetrics' warning before it
def test_compute_without_a_scored_pixel_is_refused():
    metric = FewShotIoU([1])
    with pytest.raises(InputError, match=r"FewShotIoU.compute: nothing to score.*update it with at least one episode"):
        metric.compute()
    metric.update(torch.ones(1, 2, 2), torch.full((1, 2, 2), 255), torch.tensor([1]))  # every pixel ignored
    with pytest.raises(InputError, match="nothing to score"):
        metric.compute()
    metric.update(torch.ones(1, 2, 2), torch.ones(1, 2, 2), torch.tensor([1]))
    assert metric.compute()["miou"] == 100
    metric.reset()
    with pytest.raises(InputError, match="nothing to score"):
        metric.compute()


def _ddp_worker(rank, world, port, queue):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    metric = FewShotIoU(CLASSES)
    for seed in range(rank, 5, world):  # uneven: rank 0 gets 3 batches, rank 1 gets 2
        preds, target, classes = random_batch(seed)
        metric.update(torch.from_numpy(preds), torch.from_numpy(target), torch.from_numpy(classes))
    result = metric.compute()
    metric.reset()
    if rank == 0:  # rank 1 scores nothing: its compute() takes the summed states, as rank 0's
        metric.update(torch.ones(1, 2, 2), torch.tensor([[[1, 0], [1, 1]]]), torch.tensor([CLASSES[0]]))
    alone = metric.compute()["per_class"].tolist()
    metric.reset()
    try:  # no process scored anything: every process refuses, none waits for the others
        metric.compute()
        refused = False
    except InputError:
        refused = True
    queue.put((rank, result["miou"].item(), result["fbiou"].item(), alone, refused))
    dist.destroy_process_group()


@pytest.mark.slow
def test_states_are_summed_across_processes(free_port):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, free_port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    miou, fbiou, _ = reference(*(np.concatenate(x) for x in zip(*[random_batch(s) for s in range(5)], strict=True)))
    for _, m, f, alone, refused in results:
        assert m == pytest.approx(miou, rel=1e-5)
        assert f == pytest.approx(fbiou, rel=1e-5)
        assert alone[0] == pytest.approx(75.0) and np.isnan(alone[1:]).all() and refused
