"""The LightningModule: trains and evaluates a few-shot method (`fssam2.methods`), chosen by class
path; the maths lives in the method."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Literal, NamedTuple, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from fssam2.annotations import PAD_LABEL
from fssam2.build import download
from fssam2.cache import CacheConfig, CacheStats, FeatureCache
from fssam2.data import FewShotDataModule, normalise, trainer_datamodule
from fssam2.errors import InputError
from fssam2.hub import base_weights
from fssam2.lora import LoRAConfig
from fssam2.methods import DEFAULT_METHOD, FewShotMethod, FewShotSAM2, method_class
from fssam2.metric import FewShotIoU, SupportGap, SupportMaskIoU, score_at_original_size
from fssam2.plan import trace
from fssam2.registry import RANDOM_INIT

MIN_SUPPORT_GAP = 5.0  # mIoU; a smaller support gap means the supports hardly change the masks


def support_gap_warning(split: str, true: float, swap: float, episodes: int) -> str | None:
    """The one-line warning of a support gap under MIN_SUPPORT_GAP mIoU, or None."""
    gap = true - swap
    if gap >= MIN_SUPPORT_GAP:
        return None
    return (
        f"{split}: support gap {gap:.1f} mIoU (true supports {true:.1f}, swapped supports {swap:.1f}, on "
        f"{episodes} episodes of data.gap_episodes) is under {MIN_SUPPORT_GAP:g}: the model ignores its supports "
        "and segments objects."
    )


STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def stage_class_ids(datamodule: Any, stage: str) -> dict[str, list[int]]:
    """{split: the split's class ids} for the splits a stage scores (predict: none scored, but its
    episodes are the test split's), each checked to hold at least one class; an InputError names
    the option to change. The CLI calls it before a run starts, so bad data writes nothing."""
    if not isinstance(datamodule, FewShotDataModule):
        raise InputError("FSSAM2Module needs a FewShotDataModule (the `data` option): it defines the fold's classes.")
    splits = STAGE_SPLITS.get(stage, ())
    if stage == "fit" and not datamodule.validates:
        splits = ("train",)  # no validation split (e.g. data.val_fraction=0): fit does not validate
    found = {split: list(datamodule.class_ids(split)) for split in splits}
    for split, class_ids in found.items():
        if class_ids:
            continue
        name = type(datamodule).__name__
        if getattr(datamodule, "test_classes", None) is not None:
            fix = (
                "leave at least one class out of data.test_classes for training"
                if split == "train"
                else "name at least one class folder in data.test_classes"
            )
        elif (num_folds := getattr(datamodule, "num_folds", None)) is not None:
            total = len(datamodule.class_ids("train")) + len(datamodule.class_ids("test"))
            fix = (
                f"data.fold={datamodule.fold} of data.num_folds={num_folds} holds none of the "
                f"{total} classes: set data.num_folds to at most {total} (or name data.test_classes)"
                if split != "train"
                else f"all {total} classes are held out: use more class folders or a larger data.num_folds"
            )
        else:
            fix = f"check data.fold={getattr(datamodule, 'fold', None)} and the data's split lists"
        raise InputError(f"The {split} split of {name} has no class: {fix}.")
    if stage == "predict":
        return {}
    return found


def base_checkpoint(sam2_config: str, sam2_checkpoint: str | None) -> str | None:
    """The SAM2 weights a module starts from (`hub.base_weights`); released weights it needs are
    taken from the download cache, and downloaded when absent."""
    checkpoint = base_weights(sam2_config, sam2_checkpoint)
    if sam2_checkpoint is None and checkpoint is not None:
        download(checkpoint)  # a cached file is verified; offline: one line naming the URL and target
    return checkpoint


def method_options(
    kind: type[FewShotMethod], fssam2_options: dict[str, Any], method_args: dict[str, Any] | None
) -> dict[str, Any]:
    """The options `kind.build` takes: FS-SAM2's from the module's own arguments, another method's
    from `method_args`. An option given to the wrong method is refused, never dropped."""
    if issubclass(kind, FewShotSAM2):
        if method_args:
            raise InputError(
                f"model.method_args {sorted(method_args)}: FS-SAM2 takes its options as model.lora, model.trainable, "
                "model.encoder_batch and model.merge_lora; drop model.method_args."
            )
        return fssam2_options
    defaults = {n: p.default for n, p in inspect.signature(FSSAM2Module.__init__).parameters.items()}
    # An FS-SAM2 option is left out at its default or at null (`--model.lora null`: no LoRA).
    changed = sorted(n for n, v in fssam2_options.items() if v is not None and _plain(v) != _plain(defaults[n]))
    if changed:
        flags = " ".join(f"--model.{n} {_unset(defaults[n])}" for n in changed)
        raise InputError(
            f"model.{', model.'.join(changed)} {'is' if len(changed) == 1 else 'are'} FS-SAM2's, not "
            f"{kind.__name__}'s: drop {'it' if len(changed) == 1 else 'them'} with {flags} (give "
            f"{kind.__name__}'s own options in model.method_args)."
        )
    return dict(method_args or {})


def _unset(default: Any) -> str:
    """The command-line value that leaves an FS-SAM2 option out: null for a config (or a None
    default), else its default."""
    if default is None or dataclasses.is_dataclass(default):
        return "null"
    return str(default).lower() if isinstance(default, bool) else str(default)


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


class Forward(NamedTuple):
    """One batch through the method, and what went in."""

    logits: torch.Tensor  # [B, 1, S, S] query logits
    support_masks: torch.Tensor  # [B, K, S, S] the masks the supports gave their memories (decoded from prompts)
    support_images: torch.Tensor  # [B, K, 3, S, S] uint8, as the model took them
    query_images: torch.Tensor  # [B, 3, S, S] uint8


class FSSAM2Module(L.LightningModule):
    """Meta-trains a few-shot method on episodes and scores it with the few-shot protocol.

    Args:
        method: the method's class path (a `fssam2.methods.FewShotMethod`); FS-SAM2 by default.
            The options from lora to encoder_batch are FS-SAM2's (`FewShotSAM2.build`).
        method_args: another method's own options (e.g. SANSA's `{"adapter": {"channel_factor": 0.8}}`),
            passed to its `build`; FS-SAM2 takes its options from lora to encoder_batch instead.
        sam2_config: SAM2 config, a packaged name or a yaml path (see `fssam2.build_sam2`).
        sam2_checkpoint: SAM2 weights: a checkpoint file or a name (`fssam2 download` names,
            packaged names such as fssam2_tiny_tracking); None = the released weights of a
            released `sam2_config` (downloaded when absent); "random" = random initialisation,
            which is logged and recorded. Checkpoints store the weights actually used.
        image_size: square input size (a multiple of 32); None = the config's.
        lora: LoRA placement and ranks; None = no LoRA layers.
        trainable: "lora" trains only the LoRA factors (the published setting); "all" trains
            every parameter the method uses (full fine-tuning, or a randomly initialised SAM2).
        lr: AdamW learning rate, decayed to 0 by a per-iteration cosine over the run.
        weight_decay: AdamW weight decay, not applied to 1-D parameters (biases, norms).
        betas: AdamW betas.
        feature_cache: evaluation reuses image-encoder features of images already seen (see
            `fssam2.cache`); None encodes every image of every episode, as the published loop.
        merge_lora: fold LoRA into the weights while evaluating (one matmul per layer instead
            of three); checkpoints always hold the unmerged base weights.
        compile: `torch.compile` the image encoder, memory attention and mask decoder: true
            (the inductor backend) or a backend's name; the first batches then take minutes.
        encoder_batch: at most this many images per image-encoder call; None = a whole batch's
            K+1 images per episode at once (see `fssam2.FewShotSAM2`).
    """

    def __init__(
        self,
        sam2_config: str = "sam2.1_hiera_b+",
        sam2_checkpoint: str | None = None,
        image_size: int | None = None,
        lora: LoRAConfig | None = LoRAConfig(),  # noqa: B008 - a frozen-by-convention default
        trainable: Literal["lora", "all"] = "lora",
        lr: float = 1e-4,
        weight_decay: float = 1e-6,
        betas: tuple[float, float] = (0.9, 0.999),
        feature_cache: CacheConfig | None = CacheConfig(),  # noqa: B008 - a frozen-by-convention default
        merge_lora: bool = True,
        compile: bool | str = False,
        encoder_batch: int | None = None,
        method: str = DEFAULT_METHOD,
        method_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Checkpoints may hold these configs as plain dicts (Lightning stores hyperparameters so).
        lora = LoRAConfig(**lora) if isinstance(lora, dict) else lora
        self.cache_config = CacheConfig(**feature_cache) if isinstance(feature_cache, dict) else feature_cache
        kind = method_class(method)
        if issubclass(kind, FewShotSAM2) and trainable == "lora" and lora is None:
            raise InputError(
                "model.trainable='lora' but model.lora is null: give a LoRA config or set model.trainable='all'."
            )
        fssam2_options = {
            "lora": lora,
            "trainable": trainable,
            "encoder_batch": encoder_batch,
            "merge_lora": merge_lora,
        }
        options = method_options(kind, fssam2_options, method_args)
        checkpoint = base_checkpoint(sam2_config, sam2_checkpoint)
        if checkpoint is None:
            rank_zero_warn(
                f"model.sam2_checkpoint={RANDOM_INIT}: SAM2 ({sam2_config}) starts from random initialisation."
            )
        self.hparams["sam2_checkpoint"] = checkpoint or RANDOM_INIT  # what checkpoints and results record
        self.model: FewShotMethod = kind.build(sam2_config, checkpoint, image_size, **options)
        if compile:
            if not self.model.COMPILED_PARTS:
                raise InputError(
                    f"model.compile={compile}: {kind.__name__} names no parts to compile, so nothing would be; "
                    "drop model.compile."
                )
            backend = "inductor" if compile is True else compile
            for part in self.model.COMPILED_PARTS:
                self.model.get_submodule(part).compile(backend=backend)  # in place: same parameter names
        self.metrics = torch.nn.ModuleDict()
        # (support-gap batch, first episode index) of a planned batch -> its step on this process
        self._plan_steps: dict[tuple[bool, int], int] = {}
        self._last_gap: dict[str, tuple[float, float, int]] = {}  # split -> the latest (true, swap, episodes)
        self._empty_masks: dict[str, torch.Tensor] = {}  # split -> [empty support episodes, empty targets]
        self._shipping: dict[str, torch.Tensor] = {}  # split -> [image slots, images shipped, images read late]
        self._seen_images: dict[str, set[str]] = {}  # split -> the distinct images its batches showed here

    @property
    def image_size(self) -> int:
        """The model's square input size, which the DataModule resizes images to."""
        return self.model.image_size

    def forward(
        self, support_images: torch.Tensor, support_masks: torch.Tensor, query_images: torch.Tensor
    ) -> torch.Tensor:
        return self.model(support_images, support_masks, query_images)

    def _logits(self, batch: dict[str, Any], split: str) -> Forward:
        """Query logits, what the supports gave their memories, and the images as the model took
        them; with a feature cache, the method keys the batch's images."""
        keys = None
        cache = self.model.feature_cache
        if cache is not None:
            keys = self.model.cache_keys(batch, split)
            # The batch's step in this process's plan, which the cache's next uses count in.
            step = (bool(batch.get("gap", [False])[0]), int(batch["index"][0]))
            cache.clock = self._plan_steps.get(step, cache.clock)
        support_images, query_images = self._images(batch, split, keys)
        supports, queries = normalise(support_images), normalise(query_images)  # uint8 -> float
        masks = self._support_masks(batch, supports, split, keys)
        prompts = (batch["support_points"], batch["support_labels"]) if "support_labels" in batch else None
        return Forward(self.model(supports, masks, queries, keys, prompts), masks, support_images, query_images)

    def _images(self, batch: dict[str, Any], split: str, keys: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's support images [B, K, 3, S, S] and queries [B, 3, S, S], uint8. A lean batch
        (planned evaluation, `fssam2.plan.shipping`) carries only the pixels the feature cache will
        first encode; the others stay zero unless the encoders need them after all (the cache
        evicted them), and those are read here. Counted for the cache report."""
        b, k = batch["support_masks"].shape[:2]
        if split == "train":
            return batch["support_images"], batch["query_image"]
        counts = self._shipping.setdefault(split, torch.zeros(3, dtype=torch.long, device=self.device))
        self._seen_images.setdefault(split, set()).update([*batch["query"], *(s for e in batch["supports"] for s in e)])
        if "shipped" not in batch:
            counts += torch.tensor([b * (k + 1), b * (k + 1), 0], device=self.device)  # [slots, shipped, read late]
            return batch["support_images"], batch["query_image"]
        size = self.image_size
        shipped = batch["shipped"].flatten()  # [B*(K+1)], each episode's supports then its query
        slots = torch.zeros(b * (k + 1), 3, size, size, dtype=torch.uint8, device=self.device)
        slots[shipped] = batch["shipped_images"]
        ids = [i for episode, query in zip(batch["supports"], batch["query"], strict=True) for i in (*episode, query)]
        at = {ids[i]: i for i in reversed(range(len(ids))) if shipped[i]}  # an image's shipped slot
        for i, image in enumerate(ids):
            if not shipped[i] and image in at:
                slots[i] = slots[at[image]]  # shown twice in the batch, shipped once
        late = [i for i, need in enumerate(self._needed(batch, keys)) if need and ids[i] not in at]
        if late:
            dataset = cast(FewShotDataModule, trainer_datamodule(self.trainer)).dataset(split)
            for i in late:
                slots[i] = dataset.pixels(ids[i]).to(self.device)
        counts += torch.tensor([b * (k + 1), int(shipped.sum()), len(late)], device=self.device)
        slots = slots.view(b, k + 1, 3, size, size)
        return slots[:, :k], slots[:, k]

    def _needed(self, batch: dict[str, Any], keys: Any) -> list[bool]:
        """Per slot (supports then query of each episode): whether the encoders will need its pixels
        now, by what the feature cache holds: a support's unless its memory or its features are held
        (a weak support's unless its features are), a query's unless its features are."""
        cache = self.model.feature_cache
        b, k = batch["support_masks"].shape[:2]
        if cache is None or keys is None:
            return [True] * (b * (k + 1))
        weak = (batch["support_labels"] != PAD_LABEL).any(-1).flatten().tolist() if "support_labels" in batch else []
        out = []
        for e in range(b):
            for j in range(k):
                i = e * k + j
                held = ("image", keys.supports[i]) in cache
                if not (weak and weak[i]):
                    held = held or ("memory", keys.memories[i]) in cache
                out.append(not held)
            out.append(("image", keys.queries[e]) not in cache)
        return out

    def _support_masks(self, batch: dict[str, Any], supports: torch.Tensor, split: str, keys: Any) -> torch.Tensor:
        """The masks [B, K, S, S] the supports give their memories: under a weak support
        annotation, those the method decodes from the prompts (`support_masks_from_prompts`),
        scored against the true masks (`{split}/support_mask_iou`, support-gap batches left out)."""
        masks = batch["support_masks"]
        if "support_labels" not in batch:
            return masks
        labels = batch["support_labels"].flatten(0, 1)  # [B*K, P]
        decoded = self.model.support_masks_from_prompts(
            supports.flatten(0, 1),
            masks.flatten(0, 1),
            batch["support_points"].flatten(0, 1),
            labels,
            None if keys is None else keys.supports,
        )
        # Scored where the stage scores (setup() made the metric): predict scores nothing.
        if not any(batch.get("gap", ())) and f"{split}_support_mask_iou" in self.metrics:
            metric = cast(SupportMaskIoU, self.metrics[f"{split}_support_mask_iou"])
            metric.update(decoded, masks.flatten(0, 1), (labels != PAD_LABEL).any(1))
        return decoded.view_as(masks)

    def setup(self, stage: str) -> None:
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls that remain under bf16 autocast
            torch.backends.cudnn.allow_tf32 = True
        datamodule = trainer_datamodule(self.trainer)
        for split, class_ids in stage_class_ids(datamodule, stage).items():
            if f"{split}_iou" not in self.metrics:
                self.metrics[f"{split}_iou"] = FewShotIoU(class_ids)
                self.metrics[f"{split}_support_mask_iou"] = SupportMaskIoU()
            # Made anew each run: the subset is the DataModule's (stage_class_ids checked its type).
            subset = cast(FewShotDataModule, datamodule).support_gap_episodes(split)
            if subset:
                self.metrics[f"{split}_gap"] = SupportGap([e.index for e in subset], [e.class_id for e in subset])
            elif f"{split}_gap" in self.metrics:
                del self.metrics[f"{split}_gap"]

    def _step(self, batch: dict[str, Any], split: str) -> tuple[torch.Tensor | None, list[torch.Tensor], Forward]:
        """Loss at the input size, metric where the method scores (`FewShotMethod.score`: each
        query's original size unless the method's official evaluation says otherwise); returns (loss,
        predictions, the batch's `Forward`). A support-gap batch (swapped supports) counts for the
        support gap alone: its loss is None."""
        forward = self._logits(batch, split)
        logits = forward.logits
        targets = batch["query_target"]
        gap = cast(SupportGap | None, self.metrics[f"{split}_gap"] if f"{split}_gap" in self.metrics else None)
        if any(batch.get("gap", ())):
            with torch.no_grad():
                preds, targets = self.model.score(logits.detach(), targets)
                if gap is not None:
                    gap.update(preds, targets, batch["index"], swapped=True)
            return None, preds, forward
        loss = self.model.loss(logits[:, 0].float(), batch["query_mask"])
        with torch.no_grad():
            # Episodes whose masks hold no object (a mask read by the wrong rule reads as empty);
            # the blank control's supports (support_class 0) are empty by design.
            # Counted where the batch is: no device-to-host sync per step.
            marked = torch.as_tensor(batch["support_class"], device=self.device) != 0
            empty_support = (batch["support_masks"].flatten(2).sum(2) == 0).any(1) & marked
            empty_target = ~(batch["query_mask"] == 1).flatten(1).any(1)
            counts = self._empty_masks.setdefault(split, torch.zeros(2, dtype=torch.long, device=self.device))
            counts += torch.stack([empty_support.sum(), empty_target.sum()])
            preds, targets = self.model.score(logits.detach(), targets)
            metric = cast(FewShotIoU, self.metrics[f"{split}_iou"])  # setup() put it there
            if all(p.shape == preds[0].shape for p in preds):
                metric.update(torch.stack(preds), torch.stack(targets), batch["class_id"])
            else:
                for p, t, c in zip(preds, targets, batch["class_id"], strict=True):
                    metric.update(p[None], t[None], c[None])
            if gap is not None:
                gap.update(preds, targets, batch["index"], swapped=False)
        batch_size = len(targets)
        self.log(
            f"{split}/loss",
            loss,
            on_step=split == "train",
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=split != "train",
            prog_bar=True,
        )
        return loss, preds, forward

    def _log_reduced(self, name: str, value: float | torch.Tensor, prog_bar: bool = False) -> None:
        """Log a figure every process already holds reduced over all of them (a metric's compute, a
        summed counter). Lightning syncs it again with "max", which leaves equal values exact."""
        self.log(name, value, prog_bar=prog_bar, sync_dist=True, reduce_fx="max")

    def _log_epoch(self, split: str) -> None:
        metric = cast(FewShotIoU, self.metrics[f"{split}_iou"])  # setup() put it there
        result = metric.compute()
        self._log_reduced(f"{split}/miou", result["miou"], prog_bar=True)
        self._log_reduced(f"{split}/fbiou", result["fbiou"])
        if split != "train":
            scored = result["episodes"].tolist()
            for class_id, iou, n in zip(metric.class_ids, result["per_class"], scored, strict=True):
                if n:  # a class no episode ran for has no IoU (left out of the mIoU)
                    self._log_reduced(f"{split}/iou_class_{class_id}", iou)
            self._log_reduced(f"{split}/episodes_scored", float(sum(scored)))
            if not self.trainer.sanity_checking:
                self._warn_cut_short(split, metric.class_ids, scored)
        metric.reset()
        support_iou = cast(SupportMaskIoU, self.metrics[f"{split}_support_mask_iou"])
        if getattr(trainer_datamodule(self.trainer), "support_annotation", "mask") != "mask":  # the same on every rank
            self._log_reduced(f"{split}/support_mask_iou", support_iou.compute().float())
        support_iou.reset()
        if f"{split}_gap" in self.metrics:
            self._log_gap(split, cast(SupportGap, self.metrics[f"{split}_gap"]))
        local = self._empty_masks.pop(split, torch.zeros(2, dtype=torch.long, device=self.device))
        supports, targets = (int(n) for n in self.trainer.strategy.reduce(local, reduce_op="sum"))
        self._log_reduced(f"{split}/empty_support_masks", float(supports))
        self._log_reduced(f"{split}/empty_query_targets", float(targets))
        if supports or targets:
            rank_zero_warn(
                f"{split}: {supports} episodes had an all-empty support mask and {targets} an all-empty query "
                "target: check how the masks are stored (any non-zero value is the object) and the label maps."
            )

    def _warn_cut_short(self, split: str, class_ids: list[int], scored: list[int]) -> None:
        """One warning line when fewer episodes were scored than the split holds (a run cut short,
        e.g. by trainer.limit_test_batches): what was scored, the classes left out, the gap's fate."""
        datamodule = trainer_datamodule(self.trainer)
        if not isinstance(datamodule, FewShotDataModule):
            return
        total, done = len(datamodule.dataset(split)), sum(scored)
        if done >= total:
            return
        missing = [c for c, n in zip(class_ids, scored, strict=True) if not n]
        left_out = (
            f"; classes {missing} never ran and are left out of the mIoU (the planned order runs a class's "
            "episodes together, so a cut drops whole classes)"
            if missing
            else ""
        )
        gap = ""
        if datamodule.support_gap_episodes(split):
            gap = "; the support gap covers only the episodes scored both ways (its replays run after the episodes)"
        rank_zero_warn(
            f"{split}: cut short: scored {done} of {total} episodes, {len(class_ids) - len(missing)} of "
            f"{len(class_ids)} classes{left_out}{gap}: the figures are of what ran, not of the split."
        )

    def _log_gap(self, split: str, gap: SupportGap) -> None:
        """Logs the support gap (none when no episode was scored both ways, as in the sanity check),
        and warns when it is small: at the end of a test or validate run, and of a fit (`on_fit_end`)
        rather than at each validation, when the model has not learned yet."""
        result = gap.compute()
        gap.reset()
        episodes = int(result["episodes"])
        if episodes == 0:
            return
        self._log_reduced(f"{split}/gap_miou_true", result["true"])
        self._log_reduced(f"{split}/gap_miou_swap", result["swap"])
        self._log_reduced(f"{split}/support_gap", result["gap"], prog_bar=True)
        self._log_reduced(f"{split}/gap_episodes", float(episodes))
        if self.trainer.sanity_checking:
            return
        self._last_gap[split] = (float(result["true"]), float(result["swap"]), episodes)
        if self.trainer.state.fn != TrainerFn.FITTING:
            self._warn_small_gap(split)

    def _warn_small_gap(self, split: str) -> None:
        found = self._last_gap.get(split)
        warning = support_gap_warning(split, *found) if found is not None else None
        if warning is not None:
            rank_zero_warn(warning)

    def on_fit_start(self) -> None:
        self._last_gap.pop("val", None)

    def on_fit_end(self) -> None:
        self._warn_small_gap("val")  # the last validation's

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = cast(torch.Tensor, self._step(batch, "train")[0])  # training batches are never support-gap batches
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        finite = bool(torch.isfinite(loss))
        # Decided by all ranks together: a rank raising alone would leave the others waiting in backward.
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            where = "other ranks" if finite else f"episodes {batch['index'].tolist()}"
            raise FloatingPointError(
                f"Non-finite training loss in epoch {self.current_epoch}, global step {self.global_step}, "
                f"rank {self.global_rank} ({where}): lower model.lr or check the data; "
                "the last good checkpoint is kept."
            )
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # The training randomness beyond the episodes (LoRA dropout) comes from torch's global RNG,
        # which a restarted process does not restore. Seeding it per batch from (train seed, epoch,
        # batch, rank) makes a resumed run draw what an uninterrupted one draws. (Per epoch is not
        # enough: Lightning creates the DataLoader iterator, which draws from this RNG, after
        # `on_train_epoch_start` in a running fit but before it in a resumed one.)
        seed = cast(FewShotDataModule, trainer_datamodule(self.trainer)).split_seed("train")  # setup() checked it
        rng = np.random.default_rng((seed, self.current_epoch, batch_idx, self.global_rank))
        torch.manual_seed(int(rng.integers(2**63)))

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def _start_evaluation(self, split: str, gap: bool = True) -> None:
        """Weights are fixed and images unaugmented until `_end_evaluation`: merge LoRA, start a
        cache; with a planned evaluation (data.eval_order=planned) it evicts by the plan's next uses."""
        self.model.start_evaluation()
        if self.cache_config is None:
            return
        cache = self.model.feature_cache = FeatureCache(self.cache_config)
        self._plan_steps = {}
        datamodule = trainer_datamodule(self.trainer) if self._trainer is not None else None
        plan = datamodule.eval_plan(split, gap) if isinstance(datamodule, FewShotDataModule) else None
        if plan is not None:
            limit = cast(FewShotDataModule, datamodule).batch_limit(split)
            batches = plan.rank_batches(self.global_rank, self.trainer.world_size, limit)
            cache.plan(trace(batches, split, self.model.image_size))
            self._plan_steps = {(batch[0].gap, batch[0].index): step for step, batch in enumerate(batches)}

    def _end_evaluation(self, split: str) -> None:
        cache, self.model.feature_cache = self.model.feature_cache, None
        self.model.end_evaluation()
        self._report_shipping(split)
        if cache is None:
            return
        image, memory = (cache.stats.get(kind, CacheStats()) for kind in ("image", "memory"))
        peak = cache.peak_bytes
        cache.close()
        self._plan_steps = {}
        counts = torch.tensor([image.lookups, image.computed, memory.lookups, memory.computed], device=self.device)
        images, image_passes, memories, memory_passes = (
            int(x) for x in self.trainer.strategy.reduce(counts, reduce_op="sum")
        )
        peak = int(self.trainer.strategy.reduce(torch.tensor(peak, device=self.device), reduce_op="max"))
        # Without a cache every episode encodes its K supports and its query; with one, a
        # support image is asked for only when its memory is not cached.
        uncached = memories + images - memory_passes
        rank_zero_info(
            f"{split} feature cache: {image_passes} image-encoder passes instead of {uncached} "
            f"({uncached / max(image_passes, 1):.1f}x fewer, {images - image_passes} cache hits), "
            f"{memory_passes} memory-encoder passes instead of {memories} ({memories - memory_passes} cache hits); "
            f"at most {peak / 2**20:.3g} MB held by a process"
        )
        if split != "predict":
            self._log_reduced(f"{split}/encoder_passes", float(image_passes))
            self._log_reduced(f"{split}/memory_encoder_passes", float(memory_passes))

    def _report_shipping(self, split: str) -> None:
        """Images shipped to the model (read, resized and carried by the batches) and those read late
        (needed by the encoders but not shipped), beside the floor: the distinct images the batches
        showed, per process, summed."""
        own = "test" if split == "predict" else split  # predict runs the test split
        local = self._shipping.pop(own, torch.zeros(3, dtype=torch.long, device=self.device))
        distinct = torch.tensor(len(self._seen_images.pop(own, set())), device=self.device)
        counts = self.trainer.strategy.reduce(torch.cat([local, distinct[None]]), reduce_op="sum")
        slots, shipped, late, floor = (int(x) for x in counts)
        if slots == 0:
            return
        size = self.image_size
        sent = (shipped + late) * 3 * size * size  # uint8 pixels
        rank_zero_info(
            f"{split} images: {shipped + late} read, resized and shipped to the model ({late} of them read late, "
            f"evicted from the cache), {sent / 2**20:.1f} MB, for {floor} distinct images "
            f"({(shipped + late) / max(floor, 1):.2f}x the floor); every episode's images: {slots}"
        )
        if split != "predict":
            self._log_reduced(f"{split}/images_shipped", float(shipped + late))
            self._log_reduced(f"{split}/images_read_late", float(late))
            self._log_reduced(f"{split}/distinct_images", float(floor))
            self._log_reduced(f"{split}/episode_images", float(slots))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning saves at the end of validation, which may be while the method's weights are
        # changed for evaluation (LoRA merged): the method says what the checkpoint holds instead.
        for name, weight in self.model.checkpoint_state().items():
            checkpoint["state_dict"][f"model.{name}"] = weight

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation("val")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        self._end_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._start_evaluation("test")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        loss, preds, forward = self._step(batch, "test")
        # A support-gap batch's are not the test's.
        return None if loss is None else {"preds": preds, **forward._asdict()}

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        self._end_evaluation("test")

    def on_predict_epoch_start(self) -> None:
        self._start_evaluation("test", gap=False)  # predict runs no support-gap items

    def on_predict_epoch_end(self) -> None:
        self._end_evaluation("predict")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        logits = self._logits(batch, "test")[0]
        preds = score_at_original_size(logits, batch["query_target"])
        return [
            {"index": int(i), "query": q, "class_id": int(c), "mask": p.bool().cpu()}
            for i, q, c, p in zip(batch["index"], batch["query"], batch["class_id"], preds, strict=True)
        ]

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optimizer, scheduler = self.model.optimizer(
            self.hparams["lr"],
            self.hparams["weight_decay"],
            tuple(self.hparams["betas"]),
            int(self.trainer.estimated_stepping_batches),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
