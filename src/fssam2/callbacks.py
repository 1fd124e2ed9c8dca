"""Callbacks the CLI adds by default: checkpoints in the run folder (written atomically), test
results on disk, and a W&B report of each test."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from fssam2.adapters import adapter_of, adapter_writer
from fssam2.benchmarks import write_png
from fssam2.data import IMAGENET_MEAN, IMAGENET_STD, FewShotDataModule, trainer_datamodule
from fssam2.errors import InputError
from fssam2.files import create_first_free, write_new
from fssam2.segment import mark_prompt, tint


class RunConfig(SaveConfigCallback):
    """Saves the run's config to `<run dir>/<config_filename>` when the run starts (fit, validate,
    test or predict start), never replacing an existing file: a later run in the same folder
    writes `config-1.yaml`, `test_config-1.yaml`, ... (see `write_new`). Lightning's
    SaveConfigCallback writes at setup, before the data and --ckpt_path are read, and replaces
    or refuses an existing file; a run that fails before it starts writes nothing here.
    `saved_path` is the file written (global rank 0)."""

    saved_path: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pass  # written at the start of the run instead

    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.already_saved:
            return
        self.already_saved = True
        if trainer.is_global_zero:
            text = self.parser.dump(self.config, skip_unset=False)
            self.saved_path = write_new(Path(trainer.default_root_dir) / self.config_filename, text)
            rank_zero_info(f"config saved to {self.saved_path}")
            fn = trainer.state.fn  # set while fit / validate / test / predict runs
            self.save_config(trainer, pl_module, fn.value if fn is not None else "")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module)  # during fit, already saved at on_fit_start

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module)


def _class_names(trainer: L.Trainer, split: str) -> dict[int, str]:
    """The DataModule's `class_names` of `split` (a folder dataset's class folder names), else none."""
    names_of = getattr(trainer_datamodule(trainer), "class_names", None)
    return names_of(split) if names_of is not None else {}


def per_class_iou(trainer: L.Trainer, split: str = "test") -> dict[str, float]:
    """The run's IoU per class of `split` that episodes were scored for, keyed by the DataModule's
    `class_names` (class ids where a benchmark has no names)."""
    names = _class_names(trainer, split)
    prefix = f"{split}/iou_class_"
    return {
        names.get(int(k[len(prefix) :]), k[len(prefix) :]): float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith(prefix)
    }


def _not_scored(trainer: L.Trainer, split: str) -> list[str]:
    """The classes of `split` no episode was scored for (a run cut short), named as in per_class."""
    dm = trainer_datamodule(trainer)
    if not isinstance(dm, FewShotDataModule):
        return []
    names = _class_names(trainer, split)
    return [
        names.get(c, str(c)) for c in dm.class_ids(split) if f"{split}/iou_class_{c}" not in trainer.callback_metrics
    ]


class TestResults(L.Callback):
    """Writes `<run dir>/test_metrics.json` after `test`, and `<run dir>/val_metrics.json` after
    `validate` (not the validations of a fit): mIoU, FB-IoU, per-class IoU, the episode setting,
    support control included, the support gap, the name of the run's saved config and the checkpoint, with every
    path absolute. An earlier run's file is kept: a later one writes `test_metrics-1.json`, `-2`,
    ... (see `write_new`), whole or not at all."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "test", "test_metrics.json")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._write(trainer, pl_module, "val", "val_metrics.json")

    @staticmethod
    def _write(trainer: L.Trainer, pl_module: L.LightningModule, split: str, filename: str) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{split}/")}
        dm = trainer_datamodule(trainer)
        callbacks: list[L.Callback] = trainer.callbacks  # type: ignore[attr-defined]  # set at run time, undeclared
        config = next((cb.saved_path for cb in callbacks if isinstance(cb, RunConfig)), None)
        result = {
            "miou": metrics.get(f"{split}/miou"),
            "fbiou": metrics.get(f"{split}/fbiou"),
            "per_class": per_class_iou(trainer, split),
            "data": type(dm).__name__,
            # The folders the episodes were read from, resolved (a default root is the data home).
            "data_root": _resolved(getattr(dm, "root", None)),
            "splits_dir": _resolved(getattr(dm, "splits_dir", None)),
            "fold": getattr(dm, "fold", None),
            "shot": getattr(dm, "shot", None),
            # Scored, the support-gap replays not counted; fewer than episodes_in_split in a run cut short
            # (trainer.limit_*_batches), whose mIoU is over the classes scored (classes_not_scored left out).
            "episodes": _int_or_none(metrics.get(f"{split}/episodes_scored")),
            "episodes_in_split": len(dm.dataset(split)) if isinstance(dm, FewShotDataModule) else None,
            "classes_not_scored": _not_scored(trainer, split),
            "seed": getattr(dm, "seed", None),
            "method": type(pl_module.model).__name__,  # FewShotSAM2, SANSA, ...
            "sam2_config": pl_module.hparams.get("sam2_config"),
            "sam2_checkpoint": _file_or_name(pl_module.hparams.get("sam2_checkpoint")),  # or "random"
            "support_control": getattr(dm, "support_control", None),  # which supports the number came from
            "support_annotation": getattr(dm, "support_annotation", None),  # what each support showed
            # mean IoU of the masks decoded from weak support annotations against the true ones; null under mask
            # (null too when no support had a weak annotation, e.g. under the blank control)
            "support_mask_iou": _finite_or_none(metrics.get(f"{split}/support_mask_iou")),
            # mIoU true - swap on a subset of the episodes (data.gap_episodes); null when not computed
            # (gap_episodes 0, or a support control for the whole run).
            "support_gap": metrics.get(f"{split}/support_gap"),
            "gap_miou_true": metrics.get(f"{split}/gap_miou_true"),
            "gap_miou_swap": metrics.get(f"{split}/gap_miou_swap"),
            "gap_episodes": int(metrics[f"{split}/gap_episodes"]) if f"{split}/gap_episodes" in metrics else None,
            "encoder_passes": metrics.get(f"{split}/encoder_passes"),  # None without the feature cache
            # images read, resized and shipped to the model (lean planned evaluation: about once each),
            # those read late (evicted), their uint8 bytes, the floor (distinct images) and every episode's images
            **{key: _int_or_none(metrics.get(f"{split}/{key}")) for key in SHIPPING_KEYS},
            "image_bytes_shipped": (
                int(metrics[f"{split}/images_shipped"]) * 3 * int(cast(int, pl_module.image_size)) ** 2
                if f"{split}/images_shipped" in metrics
                else None
            ),
            "memory_encoder_passes": metrics.get(f"{split}/memory_encoder_passes"),
            # Episodes; the blank control not counted.
            "empty_support_masks": metrics.get(f"{split}/empty_support_masks"),
            "empty_query_targets": metrics.get(f"{split}/empty_query_targets"),
            "config": config.name if config is not None else None,  # this run's saved config, in the run folder
            "ckpt_path": _file_or_name(trainer.ckpt_path),
        }
        path = write_new(Path(trainer.default_root_dir) / filename, json.dumps(result, indent=2))
        rank_zero_info(f"{'test' if split == 'test' else 'validation'} results written to {path}")


SHIPPING_KEYS = ("images_shipped", "images_read_late", "distinct_images", "episode_images")


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _resolved(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _file_or_name(value: str | os.PathLike | None) -> str | None:
    """An existing file's absolute path (whatever the shell's folder was); anything else (a
    downloadable name, "random", a URL) as given."""
    if not value:
        return None
    if "://" in str(value) or not Path(value).expanduser().is_file():
        return str(value)
    return str(Path(value).expanduser().resolve())


def _to_rgb(image: torch.Tensor) -> np.ndarray:
    """A batch's image [3, S, S] (uint8, or normalised float) -> uint8 [S, S, 3]."""
    if image.dtype == torch.uint8:
        return image.detach().cpu().permute(1, 2, 0).numpy()
    rgb = image.detach().float().cpu().permute(1, 2, 0).numpy() * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(rgb, 0, 255).astype(np.uint8)


# The folder of `fssam2 predict`'s masks in the run folder; a predict into a run folder that has
# one is refused before it starts (fssam2.cli.app).
PREDICTIONS = "predictions"


class PredictionWriter(L.Callback):
    """`fssam2 predict`: each test episode's predicted mask, at the query's original size, as
    `<run dir>/predictions/<episode>_<query id>_class<c>.png` (0 / 255), each a new file written
    whole (`fssam2.files.create`): a file there is never written over."""

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        folder = Path(trainer.default_root_dir) / PREDICTIONS
        for pred in outputs:
            name = f"{pred['index']:05d}_{pred['query'].replace('/', '__')}_class{pred['class_id']}.png"
            write_png(pred["mask"].numpy().astype(np.uint8) * 255, folder / name, "trainer.default_root_dir")


class WandbTestReport(L.Callback):
    """On W&B only: the test's per-class IoU as a table, and overlays (supports with their masks,
    query, prediction, ground truth) of test episodes 0 .. `episodes` - 1, captioned with their
    index: always the same ones, whichever order and process ran them (see data.eval_order)."""

    def __init__(self, episodes: int = 8) -> None:
        self.episodes = episodes
        self.rows: list[tuple[int, np.ndarray]] = []  # (episode index, overlay row) from this process

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._logger(trainer) or outputs is None:
            return
        size = outputs["query_images"].shape[-1]
        for i, (index, pred) in enumerate(zip(batch["index"].tolist(), outputs["preds"], strict=True)):
            if index >= self.episodes:
                continue
            pred = F.interpolate(pred[None, None].float(), size=(size, size), mode="nearest")[0, 0].bool().cpu().numpy()
            truth = (batch["query_mask"][i] == 1).cpu().numpy()
            query = _to_rgb(outputs["query_images"][i])
            # The masks the memories saw (decoded from the prompt under a weak annotation), the prompt drawn on.
            tiles = [
                tint(_to_rgb(img), m.bool().cpu().numpy(), (0, 200, 255))
                for img, m in zip(outputs["support_images"][i], outputs["support_masks"][i], strict=True)
            ]
            if "support_labels" in batch:
                prompts = zip(batch["support_points"][i].numpy(), batch["support_labels"][i].numpy(), strict=True)
                tiles = [mark_prompt(tile, c, lab) for tile, (c, lab) in zip(tiles, prompts, strict=True)]
            tiles += [query, tint(query, pred, (255, 60, 60)), tint(query, truth, (60, 255, 60))]
            self.rows.append((index, np.concatenate(tiles, axis=1)))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is None:
            return
        rows = self.rows
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] | None = [None] * trainer.world_size if trainer.is_global_zero else None
            torch.distributed.gather_object(rows, gathered, dst=0)  # every process calls it
            rows = [row for part in gathered or [] for row in part]
        if not trainer.is_global_zero:
            return
        per_class = [[name, iou] for name, iou in per_class_iou(trainer).items()]
        logger.log_table("test/per_class_iou", columns=["class", "iou"], data=per_class)
        if rows:
            rows = sorted(rows, key=lambda row: row[0])
            dm = trainer_datamodule(trainer)
            control = getattr(dm, "support_control", "none")
            annotation = getattr(dm, "support_annotation", "mask")
            shown = "supports (blue)" if control == "none" else f"supports (blue, support_control={control})"
            if annotation != "mask":
                shown += f", shown by {annotation} (drawn) and decoded"
            logger.log_image(
                "test/episodes",
                images=[row for _, row in rows],
                caption=[f"episode {i}: {shown} | query | prediction (red) | ground truth (green)" for i, _ in rows],
            )

    @staticmethod
    def _logger(trainer: L.Trainer) -> WandbLogger | None:
        return _wandb_logger(trainer)


class WandbAdapter(L.Callback):
    """On W&B only: at the end of a fit, the best checkpoint's adapter (as `fssam2 export` writes it)
    saved as `<run dir>/adapter.safetensors` (`adapter-1.safetensors`, ... beside an earlier one) and
    logged as a W&B artifact of type "model" with the adapter's metadata, so each run's model is on
    its dashboard. A fit that trains no adapter (model.trainable=all) logs none and says so."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = _wandb_logger(trainer)
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if logger is None or not trainer.is_global_zero or not best:
            return
        try:
            tensors, metadata = adapter_of(best)
        except InputError as err:
            rank_zero_info(f"no adapter artifact: {err}")
            return
        path = create_first_free(
            Path(trainer.default_root_dir) / "adapter.safetensors", adapter_writer(tensors, metadata)
        )
        import wandb  # here: a run without W&B never loads it

        artifact = wandb.Artifact(f"adapter-{logger.experiment.id}", type="model", metadata=metadata)
        artifact.add_file(str(path))
        logger.experiment.log_artifact(artifact)
        rank_zero_info(f"adapter {path} logged to W&B as artifact {artifact.name}")


def _wandb_logger(trainer: L.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `<dir>/.<name>.tmp`, fsyncs it, then renames it onto `<dir>/<name>`: a process
    killed while saving (or a full disk) leaves the previous checkpoint whole, and the partial
    file is the hidden .tmp, which the next save overwrites.

    Lightning's own save serialises into memory, writes a temporary file in the *system* temp dir
    and moves it over: atomic only when that dir shares the checkpoint's filesystem (otherwise the
    move copies into the target), never fsynced, and a killed save leaves the temp file behind.
    URLs (s3://, file://, ...) keep Lightning's behaviour."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if os.name == "posix":  # make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose default folder is `<trainer.default_root_dir>/checkpoints`, so
    checkpoints are found at a fixed place whatever the logger (W&B nests them under a run id),
    and which makes the Trainer write every checkpoint with `AtomicCheckpointIO`.

    A monitored one in a fit without validation (`trainer.limit_val_batches` 0) saves the latest
    state instead, so `best.ckpt` is there whether or not the run validates.

    Resuming with `--ckpt_path <dir>/last.ckpt` keeps writing best.ckpt / last.ckpt (no -v1
    copies): ModelCheckpoint restores its paths from the checkpoint when the folder is the same,
    and a save onto the path it recorded replaces that file."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        if stage == "fit" and self.monitor is not None and trainer.limit_val_batches == 0:
            # No validation runs (e.g. data.val_fraction=0, see FewShotDataModule.setup), so the monitored
            # metric never comes: this checkpoint keeps the latest state, saved after every training epoch.
            self.monitor, self._save_on_train_epoch_end = None, True
        if stage == "fit" and trainer.is_global_zero:
            self._remove_killed_saves()
        # Only Lightning's default is replaced: a CheckpointIO the user configured is kept.
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        super().setup(trainer, pl_module, stage)

    def _remove_killed_saves(self) -> None:
        """A save killed mid-write (SIGKILL, power loss) leaves its hidden `.<name>.ckpt.tmp` (see
        `AtomicCheckpointIO`); a new fit into the folder removes them. Only at fit start: a test
        run beside a running fit must not take the temporary file of a save in progress."""
        if self.dirpath is None or "://" in str(self.dirpath) or not Path(self.dirpath).is_dir():
            return
        folder = Path(self.dirpath)
        for leftover in folder.glob(f".*{self.FILE_EXTENSION}.tmp"):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
