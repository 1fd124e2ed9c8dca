"""fssam2's own commands beside the Trainer's: episodes, prepare, download, segment and export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse import ActionConfigFile, ArgumentParser

from fssam2 import build, hub
from fssam2.benchmarks import read_image, write_png
from fssam2.data import FewShotDataModule
from fssam2.episodes import EVAL_EPOCH
from fssam2.errors import InputError
from fssam2.files import check_new, create
from fssam2.methods import DEFAULT_METHOD, FewShotSAM2, method_class
from fssam2.module import FSSAM2Module


def episodes_command(args: list[str]) -> None:
    """`fssam2 episodes`: print the episodes a config would run, one JSON object a line."""
    parser = ArgumentParser(prog="fssam2 episodes", description=episodes_command.__doc__)
    parser.add_argument("--config", action=ActionConfigFile, help="a fit/test config; only its data section is used")
    parser.add_subclass_arguments(FewShotDataModule, "data", required=True)
    parser.add_argument("--split", type=Literal["test", "val", "train"], default="test")
    parser.add_argument("--epoch", type=int, default=EVAL_EPOCH, help="training epoch (test and val episodes use -1)")
    parser.add_argument("--limit", type=int | None, default=None, help="print at most this many episodes")
    for ignored in ("model", "trainer", "seed_everything", "ckpt_path", "optimizer", "lr_scheduler"):
        parser.add_argument(f"--{ignored}", type=Any, default=None, help=argparse.SUPPRESS)
    cfg = parser.instantiate(parser.parse_args(args))
    rule = cfg.data.episodes(cfg.split)
    count = len(rule) if cfg.limit is None else min(cfg.limit, len(rule))
    for index in range(count):
        ep = rule.episode(index, cfg.epoch)
        print(json.dumps({"index": index, "query": ep.query, "class": ep.class_id, "supports": list(ep.supports)}))


def prepare_command(args: list[str]) -> None:
    """`fssam2 prepare pascal|coco|fss1000|splits`: the benchmarks and split lists, checked."""
    # Imported here: prepare pascal needs torchvision (its archives' URLs and MD5s), which
    # fit / test / segment do not, e.g. on a GPU machine that has torch alone.
    from fssam2 import prepare

    prepare.main(args)


def download_command(args: list[str]) -> None:
    """`fssam2 download NAME`: fetch a released SAM2 checkpoint into the cache ($FSSAM2_HOME), from the
    Hugging Face Hub checked against its published SHA-256, else from Meta's URL."""
    parser = argparse.ArgumentParser(prog="fssam2 download", description=download_command.__doc__)
    parser.add_argument(
        "name", help=f"one of {', '.join(hub.CHECKPOINT_URLS)}; GF-SAM's DINOv2: {', '.join(hub.ENCODER_CHECKPOINTS)}"
    )
    parser.add_argument("--sha256", help="expected SHA-256 of the file, when you have one")
    parser.add_argument("--url", help="fetch from this URL only (no Hugging Face Hub, no Meta URL)")
    opts = parser.parse_args(args)
    if opts.name in hub.ENCODER_CHECKPOINTS:
        from fssam2.methods.dinov2 import check_loads

        if opts.url is not None:
            raise InputError(
                f"{opts.name} comes from the Hugging Face Hub only: drop --url (HF_ENDPOINT names a mirror)."
            )
        path = hub.download(opts.name, sha256=opts.sha256, check=lambda p: check_loads(opts.name, p))
    else:
        path = build.download(opts.name, sha256=opts.sha256, url=opts.url)
    if opts.name in hub.PACKAGED_CHECKPOINTS:  # verified, nothing fetched
        print(f"{opts.name} is packaged with fssam2, no download needed; its file (SHA-256 checked):")
    print(path)


def segment_command(args: list[str]) -> None:
    """`fssam2 segment`: masks for your own images from a few annotated examples."""
    import tempfile

    from fssam2.segment import (
        Segmenter,
        image_files,
        is_prompt_file,
        mark_prompt,
        output_plan,
        overlay,
        parse_method_args,
        read_mask,
        read_prompt,
        support_overlay_path,
        support_pairs,
        support_prompt,
        write_masks,
    )

    parser = argparse.ArgumentParser(prog="fssam2 segment", description=segment_command.__doc__)
    parser.add_argument("--support", nargs="+", action="append", required=True, metavar="IMAGE MASK | FOLDER",
                        help="an annotated example (repeat for K > 1): its mask, or a prompt file <name>.json "
                             '{"points": [[x, y, 1], ...], "box": [x0, y0, x1, y1]}; or a folder of '
                             "<name>.jpg + <name>.png (or <name>.json) pairs")  # fmt: skip
    parser.add_argument("--query", nargs="+", required=True, help="images, or folders of images, to segment")
    parser.add_argument("--output", required=True, help="folder for <name>.png masks and <name>_overlay.png")
    parser.add_argument("--adapter", help="adapter file from `fssam2 export` (default: plain SAM2 with its memory)")
    parser.add_argument("--method", metavar="CLASS_PATH",
                        help="the method by class path, as a config's model.method: a training-free one such as "
                             "fssam2.methods.GFSAM, or the adapter's (default: the adapter's, else plain SAM2)")  # fmt: skip
    parser.add_argument("--method-args", metavar="JSON",
                        help="the method's own options as a JSON object, as a config's model.method_args, "
                             """e.g. '{"encoder": "sam2"}' for GF-SAM""")  # fmt: skip
    parser.add_argument("--sam2", help="SAM2 config name (default: the adapter's base, else sam2.1_hiera_b+; "
                                       "configs/gfsam run GF-SAM on sam2.1_hiera_l)")  # fmt: skip
    parser.add_argument(
        "--sam2-checkpoint",
        help="SAM2 checkpoint path or downloaded name (default: the adapter's base checkpoint when --sam2 is not "
        "given, else the --sam2 download)",
    )
    parser.add_argument("--image-size", type=int, help="model input size (default: the adapter's, else the config's)")
    parser.add_argument("--threshold", type=float, default=0.0, help="logit threshold (0 = probability 0.5)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    opts = parser.parse_args(args)
    method_args = parse_method_args(opts.method_args)
    pairs = support_pairs(opts.support)
    queries = image_files(opts.query, "Query")
    output = Path(opts.output).expanduser()
    plan = output_plan(pairs, queries, output)  # refuses clashes before anything is written
    try:
        output.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output).close()  # a fresh name: nothing there is touched
    except OSError as err:
        raise InputError(
            f"Output folder {output} cannot be written ({err.strerror}): choose another --output."
        ) from err
    seg = Segmenter.from_pretrained(opts.sam2, opts.adapter, method=opts.method, method_args=method_args,
                                    sam2_checkpoint=opts.sam2_checkpoint, image_size=opts.image_size,
                                    device=opts.device, threshold=opts.threshold)  # fmt: skip
    images = [read_image(i) for i, _ in pairs]
    notes = [read_prompt(m) if is_prompt_file(m) else read_mask(m) for _, m in pairs]
    seg.set_support(images, notes, names=[str(i) for i, _ in pairs])
    drawn: set[Path] = set()
    for (image_path, _), image, note, mask in zip(pairs, images, notes, seg.support_masks, strict=True):
        target = support_overlay_path(output, image_path)
        if isinstance(note, dict) and target not in drawn:  # a prompt file: the mask SAM2 decoded, and the prompt
            coords, labels = support_prompt(note, image.shape[1], image.shape[0])
            write_png(mark_prompt(overlay(image, mask), coords, labels), target, "--output")
            drawn.add(target)  # an image given twice is drawn once, as output_plan plans
    written = write_masks(seg, plan)  # skips, then names (InputError), queries that are not images
    print(f"wrote {written} masks and overlays to {output}")


def export_command(args: list[str]) -> None:
    """`fssam2 export CKPT`: an adapter file (LoRA weights + metadata), and optionally a merged model."""
    from fssam2.adapters import export_adapter, merge_lora, module_kwargs, read_training_checkpoint

    parser = argparse.ArgumentParser(prog="fssam2 export", description=export_command.__doc__)
    parser.add_argument("checkpoint", help="a .ckpt written by `fssam2 fit`")
    parser.add_argument("--output", help="adapter file to write (.safetensors)")
    parser.add_argument("--merge", help="also write the whole SAM2 with LoRA merged in, in Meta's format (.pt)")
    opts = parser.parse_args(args)
    if not (opts.output or opts.merge):
        raise InputError("fssam2 export needs --output ADAPTER.safetensors and/or --merge MODEL.pt.")
    # Both are new files, checked before the checkpoint is read or anything is written.
    adapter = opts.output and check_new(opts.output, "--output")
    merged = opts.merge and check_new(opts.merge, "--merge")
    if adapter and merged and adapter.resolve() == merged.resolve():
        raise InputError(f"--output and --merge both name {adapter}: give each its own file.")
    if opts.output:
        export_adapter(opts.checkpoint, opts.output, "--output")
        print(f"wrote adapter {opts.output} ({Path(opts.output).stat().st_size / 1e6:.2f} MB)")
    if opts.merge:
        ckpt = read_training_checkpoint(opts.checkpoint)
        method = method_class(ckpt["hyper_parameters"].get("method", DEFAULT_METHOD))
        if not issubclass(method, FewShotSAM2):
            raise InputError(
                f"--merge: {method.__name__}'s adapters are layers of their own, not changes to SAM2's weights, "
                "so there is no plain SAM2 to write: export the adapter file with --output alone."
            )
        module = FSSAM2Module(**module_kwargs(ckpt))
        module.load_state_dict(ckpt["state_dict"])
        state = merge_lora(module.model)
        target = create(opts.merge, lambda tmp: torch.save({"model": state}, tmp), "--merge")
        print(
            f"wrote merged model {target}: load it with build_sam2({ckpt['hyper_parameters']['sam2_config']!r}, {str(target)!r})"
        )
