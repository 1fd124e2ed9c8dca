"""The objectness oracle: a support-blind reference line for a few-shot benchmark.

For each evaluation episode it predicts every labelled object of the query (label value > 0 and
not the ignore value 255), whatever the episode's class, and scores that with the same metric,
at the same (original) size and over the same episodes as a model's test run. No model is
involved: it is computed from the label maps. A model that only segments salient objects scores
about this; a model shows few-shot ability by beating it (DESIGN.md, "Controls").

It needs label maps that hold every object of an image (synthetic, PASCAL-5i, COCO-20i). The
readers of FSS-1000 and of folder datasets give one binary mask per image, so "every object"
would be the target itself and the oracle would be a perfect prediction (100 mIoU): for those
datasets it refuses with an InputError rather than report a meaningless line.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fssam2.data import FewShotDataModule, binary_target
from fssam2.episodes import EVAL_EPOCH
from fssam2.errors import InputError
from fssam2.metric import IGNORE, FewShotIoU


def objectness_prediction(label: np.ndarray) -> np.ndarray:
    """Every labelled object of a label map: bool [H, W], true where 0 < label != 255."""
    return (label > 0) & (label != IGNORE)


def objectness_oracle(datamodule: FewShotDataModule, split: str = "test") -> dict[str, Any]:
    """Score "predict every object of the query" on the evaluation episodes of `split`.

    Walks `datamodule.episodes(split)` with the evaluation epoch, reads each query's label map
    with `datamodule.image_reader(split)` and scores with `FewShotIoU` over
    `datamodule.class_ids(split)`, as a test run does. `datamodule.image_size` is not needed.

    Returns:
        {"miou": float, "fbiou": float (percent), "per_class": {"<class id>": IoU percent},
        "episodes": number of episodes scored}, the keys and format of `test_metrics.json`.
    """
    if split not in ("test", "val"):
        raise InputError(f"objectness_oracle split={split!r}: use 'test' or 'val' (the splits a model is scored on).")
    if not datamodule.full_label_maps:
        raise InputError(
            f"{type(datamodule).__name__} gives one binary mask per image, not label maps of every object: "
            "the objectness oracle would be the target itself; use it on synthetic, PASCAL-5i or COCO-20i "
            "(a DataModule whose reader returns full label maps can declare `full_label_maps = True`)."
        )
    rule = datamodule.episodes(split)
    read = datamodule.image_reader(split)
    metric = FewShotIoU(class_ids=datamodule.class_ids(split), ignore_index=IGNORE)
    # Queries repeat across episodes: read each once, with every class it is asked for.
    classes_of: dict[str, list[int]] = {}
    for index in range(len(rule)):
        episode = rule.episode(index, EVAL_EPOCH)
        classes_of.setdefault(episode.query, []).append(episode.class_id)
    for query, class_ids in classes_of.items():
        _, label = read(query)
        pred = torch.from_numpy(objectness_prediction(label))
        targets = torch.from_numpy(np.stack([binary_target(label, c) for c in class_ids]))
        metric.update(pred.expand_as(targets), targets, torch.tensor(class_ids))
    result = metric.compute()
    return {
        "miou": float(result["miou"]),
        "fbiou": float(result["fbiou"]),
        "per_class": {str(c): float(v) for c, v in zip(metric.class_ids, result["per_class"], strict=True)},
        "episodes": len(rule),
    }
