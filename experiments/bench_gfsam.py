"""GF-SAM in fssam2 against the official forward (github ANDYZAQ/GF-SAM, matcher/GFSAM.py): episodes a
second side by side in one run, with the masks compared episode by episode.

    git clone https://github.com/ANDYZAQ/GF-SAM ~/GF-SAM       # the official code, imported from there
    python experiments/bench_gfsam.py --official ~/GF-SAM --threads 1          # CPU: tiny SAM2 at 128 px
    python experiments/bench_gfsam.py --official ~/GF-SAM --device cuda --sam2 sam2.1_hiera_b+ \
        --image-size 1024 --dinov2 vitl14 --shots 1 --episodes 24

Nothing of the official code is copied: `--official` names a checkout, whose `matcher`, `dinov2` and
`segment_anything` are imported from there. Both sides get the same SAM2 (one module; the official
side calls it through SAM2's own `SAM2ImagePredictor` behind the `SamPredictor` calls its code makes,
the image normalised as fssam2 normalises it) and the same DINOv2 weights (Meta's
`DinoVisionTransformer` built by the official code's own module, its state dict loaded into ours by
`fssam2.methods.dinov2.load_weights`). The official `Resize(518)` is set to no antialias, as its
pinned torchvision 0.14 resizes a tensor. Weights are random: `--dinov2 tiny` (width 48, 2 blocks,
at 518 px) draws every parameter from N(0, 0.2), as the equality check of docs/methods.md does;
`vitl14` (ViT-L/14, the published encoder) keeps Meta's initialisation. SAM2's weights:
`--sam2-checkpoint` (a file or a name), by default `fssam2_tiny_pointers` for the tiny SAM2, the
released weights of a released config where they are downloaded, else random (the machine may be
offline). Random SAM2 weights still decode a mask from every point, but not a meaningful one: the
graph's clusters, and with them the work of its loops, differ from those of real weights (the output
counts the official code's empty final masks).

The episodes are generated and seeded: a pool of `--images` images of `--classes` classes (coloured
blobs with pixel noise on a blocky ground, so no two patches tie), each episode a class, a query and
K other images of that class from the pool. The default pool (12 images, 2 classes, 30 episodes) reuses
images about as PASCAL-5i fold 0 does (0.36 distinct images an episode; 364 for 1000). Per shot K,
three paths run the same episodes, group by group (`--batch-size` episodes), in alternating order so
the machine's load hits them alike, each timed on its own (the device synchronised), after `--warmup`
episodes that are not timed:

1. official: per episode set_reference / set_target / predict / clear;
2. fssam2, one at a time: `GFSAM.forward` on one episode, no cache (like for like with 1);
3. fssam2, batched: `GFSAM.forward` on the group's episodes with a feature cache and the cache keys
   `fssam2 test` gives it (fresh after the warm-up). This is fssam2's evaluation step without its
   data loader: what `fssam2 test` runs per batch; its data path is measured by bench_fold_cache.py.

All three start from the same uint8 pixels on the host and move them to the device inside the timed
step. Beside the speed, its control: the final masks of 2 and 3 against the official's, pixel for
pixel, per episode (the count of identical ones), the points the official code decoded (the work
of an episode), and each path's SAM2 and DINOv2 passes (forward hooks on SAM2's image encoder and on
each DINOv2's patch embedding). Everything runs in float32 (`fssam2 test` on a GPU defaults to bf16-mixed,
not timed here). The output names the machine, the device, the torch threads and the load.

    --json FILE     the numbers (a new file: one that exists is refused before anything runs)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fssam2 import hub
from fssam2.build import build_sam2
from fssam2.cache import CacheConfig, FeatureCache, image_key, memory_key
from fssam2.data import normalise
from fssam2.errors import InputError
from fssam2.files import check_new, create
from fssam2.methods.dinov2 import ENCODERS, PATCH, SemanticEncoder, load_weights
from fssam2.methods.features import EpisodeKeys
from fssam2.methods.gfsam import GFSAM

OFFICIAL_REPO = "https://github.com/ANDYZAQ/GF-SAM"
OFFICIAL_SIDE = 518  # the official code resizes every image to 518 px for DINOv2, whatever the encoder
DINOV2 = {"tiny": "dinov2_tiny", "vitl14": "dinov2_vitl14"}
TINY_INIT_STD = 0.2  # --dinov2 tiny: every parameter, LayerScale included, so every block counts
PATHS = ("official", "fssam2, one at a time", "fssam2, batched + feature cache")
SPLIT = "test"


def official_code(folder: Path) -> types.SimpleNamespace:
    """The official GFSAM class, Meta's DinoVisionTransformer and torchvision's transforms, imported
    from a checkout of the official code; one line when the folder is not one."""
    if not (folder / "matcher" / "GFSAM.py").is_file():
        raise InputError(
            f"--official {folder} holds no matcher/GFSAM.py: give a checkout of the official GF-SAM code "
            f"(git clone {OFFICIAL_REPO})."
        )
    sys.path.insert(0, str(folder.resolve()))
    try:
        import matplotlib.pyplot  # noqa: F401  (the official module imports it and never uses it)
    except ImportError:
        sys.modules["matplotlib"] = types.ModuleType("matplotlib")
        sys.modules["matplotlib.pyplot"] = types.ModuleType("matplotlib.pyplot")
    try:
        from dinov2.models.vision_transformer import DinoVisionTransformer
        from matcher.GFSAM import GFSAM as Official
        from segment_anything.utils.transforms import ResizeLongestSide
        from torchvision import transforms
    except ImportError as err:
        raise InputError(
            f"--official {folder}: importing its matcher.GFSAM failed ({err}); give a whole checkout "
            f"(git clone {OFFICIAL_REPO}) and an environment with torchvision and scipy."
        ) from err
    return types.SimpleNamespace(
        GFSAM=Official,
        DinoVisionTransformer=DinoVisionTransformer,
        ResizeLongestSide=ResizeLongestSide,
        transforms=transforms,
    )


class SAM2Predictor:
    """SAM2's own image predictor behind the SamPredictor calls the official code makes (`transform`,
    `model.mask_threshold`, `features`, `set_image`, `predict_torch`); the image normalised as fssam2
    normalises it, so the comparison is of GF-SAM, not of SAM2's preprocessing."""

    def __init__(self, sam2: torch.nn.Module, size: int, transform: Any) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.predictor = SAM2ImagePredictor(sam2)
        self.predictor._bb_feat_sizes = [(size // s, size // s) for s in (4, 8, 16)]  # it assumes 1024 px
        self.predictor._transforms.forward = lambda image: normalise(torch.from_numpy(image).permute(2, 0, 1))
        self.transform = transform  # the official ResizeLongestSide(size): grid cells -> input pixels
        self.model = types.SimpleNamespace(mask_threshold=self.predictor.mask_threshold)
        self.features = None

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def predict_torch(
        self,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        features: Any = None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, None, None, None]:
        masks, _, _ = self.predictor._predict(
            point_coords.float(), point_labels, multimask_output=multimask_output, return_logits=True
        )
        return masks, None, None, None


@dataclass
class Pool:
    """Generated images of a few classes: pixels [N, 3, S, S] uint8 and each image's mask of its class [N, S, S]."""

    pixels: torch.Tensor
    masks: torch.Tensor
    classes: list[int]  # the class of each image

    def ids(self, c: int) -> list[int]:
        return [i for i, k in enumerate(self.classes) if k == c]


@dataclass(frozen=True)
class Episode:
    cls: int
    query: int
    supports: tuple[int, ...]


def make_pool(images: int, classes: int, size: int, seed: int) -> Pool:
    """`images` images, class i % classes each: the class's colour on one blob (its mask) and two
    blobs of other colours, on a blocky ground, with pixel noise so that no two patches are alike."""
    g = np.random.default_rng(seed)
    palette = g.integers(0, 255, (classes, 3))
    yy, xx = np.mgrid[:size, :size]
    pixels, masks, labels = [], [], []
    for i in range(images):
        c = i % classes
        image = g.integers(0, 60, (size // 8, size // 8, 3)).repeat(8, 0).repeat(8, 1)
        mask = np.zeros((size, size), bool)
        for blob in range(3):
            cy, cx = g.integers(size // 8, size - size // 8, 2)
            ry, rx = g.integers(size // 12, size // 4, 2)
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            image[inside] = palette[c] if blob == 0 else g.integers(0, 255, 3)
            mask = mask | inside if blob == 0 else mask & ~inside
        image = np.clip(image + g.integers(-6, 7, image.shape), 0, 255).astype(np.uint8)
        pixels.append(torch.from_numpy(image).permute(2, 0, 1))
        masks.append(torch.from_numpy(mask))
        labels.append(c)
    return Pool(torch.stack(pixels), torch.stack(masks), labels)


def make_episodes(pool: Pool, count: int, shot: int, seed: int) -> list[Episode]:
    """`count` episodes cycling through the classes, each a query and `shot` other images of its class."""
    g = np.random.default_rng([seed, shot])
    episodes = []
    classes = sorted(set(pool.classes))
    for e in range(count):
        c = classes[e % len(classes)]
        chosen = [int(i) for i in g.permutation(pool.ids(c))[: shot + 1]]
        episodes.append(Episode(c, chosen[0], tuple(chosen[1:])))
    return episodes


def dinov2_pair(
    official: types.SimpleNamespace, which: str, device: torch.device
) -> tuple[torch.nn.Module, SemanticEncoder]:
    """The official DINOv2 (Meta's module) with random weights and ours (timm's) with the same weights,
    both at the 518 px the official code resizes to."""
    from timm.models.vision_transformer import VisionTransformer

    name = DINOV2[which]
    arch = ENCODERS[name]
    torch.manual_seed(0)
    theirs = official.DinoVisionTransformer(
        img_size=OFFICIAL_SIDE, patch_size=PATCH, embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads,
        mlp_ratio=4, init_values=1e-5, ffn_layer="mlp", block_chunks=0, qkv_bias=True, proj_bias=True, ffn_bias=True,
    ).eval()  # fmt: skip
    if which == "tiny":
        with torch.no_grad():
            for p in theirs.parameters():
                p.normal_(0, TINY_INIT_STD)
    vit = VisionTransformer(
        img_size=OFFICIAL_SIDE, patch_size=PATCH, embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads,
        init_values=1e-5, qkv_bias=True, num_classes=0,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fssam2-dinov2-") as tmp:
        path = Path(tmp) / "dinov2_pretrain.pth"
        torch.save(theirs.state_dict(), path)  # Meta's key names, as its released file
        load_weights(vit, path, f"{name} at {OFFICIAL_SIDE} px")
    return theirs.to(device), SemanticEncoder(vit, name).to(device)


def sam2_weights(config: str, checkpoint: str | None) -> str | None:
    """The SAM2 checkpoint to load (None: random weights): `checkpoint` as given ("random": none);
    unset, the packaged pretrained tiny SAM2, or a released config's downloaded weights, else none."""
    if checkpoint is not None:
        return None if checkpoint == "random" else checkpoint
    if config == "fssam2_tiny":
        return "fssam2_tiny_pointers"
    if config in hub.CHECKPOINT_URLS and hub.cached_path(config).is_file():
        return config
    return None


def machine(device: torch.device) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    return {
        "cpu": names[0] if names else platform.processor() or platform.machine(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


class Bench:
    """The three paths on one pool, each step timed on its own, and the images each path's encoders
    took (forward hooks on SAM2's image encoder and on both DINOv2s)."""

    def __init__(
        self, official: Any, ours: GFSAM, their_dinov2: torch.nn.Module, pool: Pool, device: torch.device
    ) -> None:
        self.official, self.ours, self.pool, self.device = official, ours, pool, device
        self.size = int(pool.pixels.shape[-1])
        self.path = PATHS[0]  # the path running: SAM2 is one module, shared
        self.seconds = dict.fromkeys(PATHS, 0.0)
        self.passes = {p: {"sam2": 0, "dinov2": 0} for p in PATHS}
        assert ours.encoder is not None, "GF-SAM with a DINOv2"
        for module, kind in (
            (ours.sam2.image_encoder, "sam2"),
            (ours.encoder.vit.patch_embed, "dinov2"),  # the official code calls forward_features, not the module
            (their_dinov2.patch_embed, "dinov2"),
        ):
            module.register_forward_hook(self.counter(kind))

    def counter(self, kind: str) -> Callable[..., None]:
        def count(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
            self.passes[self.path][kind] += len(inputs[0])

        return count

    def timed(
        self, path: str, work: Callable[[list[Episode]], list[torch.Tensor]], group: list[Episode]
    ) -> list[torch.Tensor]:
        self.path = path
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = work(group)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds[path] += time.perf_counter() - start
        return out

    def official_masks(self, episodes: list[Episode]) -> list[torch.Tensor]:
        """The official forward, one episode at a time, its images and masks moved to the device as
        its loader's batch would be. Where its map gives no point its code fails (`selected_points`
        unset): that episode's answer is empty, as ours is, and counted."""
        out = []
        for ep in episodes:
            supports = self.pool.pixels[list(ep.supports)].to(self.device)
            masks = self.pool.masks[list(ep.supports)].to(self.device).float()
            query = self.pool.pixels[ep.query].to(self.device)
            self.official.set_reference(supports[None].float() / 255, masks[None])
            self.official.set_target(query[None].float() / 255)
            try:
                pred, (coords, _) = self.official.predict()
            except UnboundLocalError:
                pred, coords = torch.zeros(1, self.size, self.size, device=self.device), []
                self.failed += 1
            self.official.clear()
            self.points.append(len(coords))
            out.append(pred[0] > 0)
        return out

    def ours_alone(self, episodes: list[Episode]) -> list[torch.Tensor]:
        out = []
        for ep in episodes:
            supports = normalise(self.pool.pixels[list(ep.supports)].to(self.device))
            masks = self.pool.masks[list(ep.supports)].to(self.device).float()
            query = normalise(self.pool.pixels[ep.query].to(self.device))
            out.append(self.ours(supports[None], masks[None], query[None])[0, 0] > 0)
        return out

    def keys(self, episodes: list[Episode]) -> EpisodeKeys:
        """The keys `SAM2Method.cache_keys` gives a batch: an image by (split, id, size), a support's
        memory by its image and class."""
        supports = [image_key(SPLIT, str(s), self.size) for ep in episodes for s in ep.supports]
        classes = [ep.cls for ep in episodes for _ in ep.supports]
        memories = [memory_key(key, c) for key, c in zip(supports, classes, strict=True)]
        return EpisodeKeys(supports, memories, [image_key(SPLIT, str(ep.query), self.size) for ep in episodes])

    def ours_batched(self, episodes: list[Episode]) -> list[torch.Tensor]:
        b, shot = len(episodes), len(episodes[0].supports)
        index = [s for ep in episodes for s in ep.supports]
        supports = normalise(self.pool.pixels[index].to(self.device))
        masks = self.pool.masks[index].to(self.device).float()
        queries = normalise(self.pool.pixels[[ep.query for ep in episodes]].to(self.device))
        logits = self.ours(
            supports.unflatten(0, (b, shot)), masks.unflatten(0, (b, shot)), queries, self.keys(episodes)
        )
        return list(logits[:, 0] > 0)

    def run(self, episodes: list[Episode], batch: int) -> dict[str, Any]:
        """The episodes group by group through the three paths, in alternating order (the batched
        path's feature cache fresh at the start): each path's seconds and encoder passes, the masks
        equal to the official's, and the official's points."""
        self.seconds = dict.fromkeys(PATHS, 0.0)
        self.passes = {p: {"sam2": 0, "dinov2": 0} for p in PATHS}
        self.points: list[int] = []
        self.failed = self.empty = 0
        self.ours.feature_cache = FeatureCache(CacheConfig())
        works = dict(zip(PATHS, (self.official_masks, self.ours_alone, self.ours_batched), strict=True))
        equal = dict.fromkeys(PATHS[1:], 0)
        for n, start in enumerate(range(0, len(episodes), batch)):
            group = episodes[start : start + batch]
            masks = {path: self.timed(path, works[path], group) for path in (PATHS if n % 2 == 0 else PATHS[::-1])}
            for path in equal:
                equal[path] += sum(int(torch.equal(a, b)) for a, b in zip(masks[PATHS[0]], masks[path], strict=True))
            self.empty += sum(int(not m.any()) for m in masks[PATHS[0]])
        self.ours.feature_cache = None
        images = {ep.query for ep in episodes} | {s for ep in episodes for s in ep.supports}
        return {
            "episodes": len(episodes),
            "seconds": dict(self.seconds),
            "episodes_per_s": {p: len(episodes) / s for p, s in self.seconds.items()},
            "equal_masks": equal,
            "official_failed": self.failed,
            "official_empty": self.empty,
            "points_per_episode": sum(self.points) / len(self.points),
            "distinct_images": len(images),
            "query_images": len({ep.query for ep in episodes}),
            "encoder_passes": self.passes,
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help=f"a checkout of {OFFICIAL_REPO}")
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--episodes", type=int, default=30, help="timed episodes per shot")
    parser.add_argument("--warmup", type=int, default=4, help="episodes per shot run first, not timed")
    parser.add_argument("--batch-size", type=int, default=8, help="episodes a group (the batched path's batch)")
    parser.add_argument("--images", type=int, default=12, help="images in the pool the episodes draw from")
    parser.add_argument("--classes", type=int, default=2, help="classes of the pool")
    parser.add_argument("--sam2", default="fssam2_tiny", help="SAM2 config")
    parser.add_argument("--sam2-checkpoint", help="a file or name, or random (default: see above)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--dinov2", choices=list(DINOV2), default="tiny", help="the DINOv2 both sides run (random)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadier on a busy CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the numbers here (a new file)")
    opts = parser.parse_args(argv)
    try:
        if opts.json:
            check_new(opts.json, "--json")  # before the long run
        official = official_code(opts.official.expanduser())
    except InputError as err:
        parser.error(str(err))
    if opts.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    if min(opts.shots) < 1:
        parser.error("--shots must be >= 1")
    if opts.images // opts.classes < max(opts.shots) + 1:
        parser.error(f"--images {opts.images} over --classes {opts.classes} must give each class K + 1 images")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    info = machine(device)
    weights = sam2_weights(opts.sam2, opts.sam2_checkpoint)
    where = info["gpu"] or f"CPU {info['cpu']}, {info['usable_cpus']} usable cores"
    tf32 = ""
    if device.type == "cuda":  # torch's defaults, left as they are for both sides
        tf32 = f" (TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, convolutions {torch.backends.cudnn.allow_tf32})"
    print(f"# GF-SAM: fssam2 against the official forward ({opts.official})\n")
    print(f"- {where}; torch {info['torch']}, {info['threads']} threads; load average at start {info['load_average_1min']:.2f}")  # fmt: skip
    print(f"- SAM2 {opts.sam2} at {opts.image_size} px, weights {weights or 'random'}; DINOv2 {DINOV2[opts.dinov2]} "
          f"at {OFFICIAL_SIDE} px, random weights; float32{tf32}; seed {opts.seed}")  # fmt: skip

    sam2 = build_sam2(opts.sam2, weights, image_size=opts.image_size, device=device)
    theirs_dino, our_dino = dinov2_pair(official, opts.dinov2, device)
    ours = GFSAM(sam2, our_dino).eval()
    theirs = official.GFSAM(
        encoder=theirs_dino,
        generator=SAM2Predictor(sam2, opts.image_size, official.ResizeLongestSide(opts.image_size)),
        input_size=opts.image_size,
        device=device,
    )
    theirs.encoder_transform.transforms[1] = official.transforms.Resize(
        OFFICIAL_SIDE, interpolation=official.transforms.InterpolationMode.BILINEAR, antialias=False
    )
    pool = make_pool(opts.images, opts.classes, opts.image_size, opts.seed)
    bench = Bench(theirs, ours, theirs_dino, pool, device)
    results: dict[str, Any] = {}
    for shot in opts.shots:
        episodes = make_episodes(pool, opts.warmup + opts.episodes, shot, opts.seed)
        with torch.inference_mode():
            if opts.warmup:
                bench.run(episodes[: opts.warmup], opts.batch_size)
            results[str(shot)] = r = bench.run(episodes[opts.warmup :], opts.batch_size)
        rates = r["episodes_per_s"]
        print(
            f"- K={shot}: {r['episodes']} episodes, " + ", ".join(f"{p} {v:.2f}/s" for p, v in rates.items()),
            flush=True,
        )

    print(f"\n| GF-SAM, {opts.sam2} {opts.image_size} px, DINOv2 {opts.dinov2} ({where}, {info['threads']} threads, "
          "float32) | K | episodes | episodes/s | s a query | vs official | SAM2 passes | DINOv2 passes "
          "| final masks equal to the official's |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for shot, r in results.items():
        base = r["episodes_per_s"][PATHS[0]]
        for path, rate in r["episodes_per_s"].items():
            same = "" if path == PATHS[0] else f"{r['equal_masks'][path]}/{r['episodes']}"
            passes = r["encoder_passes"][path]
            print(f"| {path} | {shot} | {r['episodes']} | {rate:.2f} | {1 / rate:.3f} | {rate / base:.2f}x "
                  f"| {passes['sam2']} | {passes['dinov2']} | {same} |")  # fmt: skip
    print()
    for shot, r in results.items():
        failed = f"; the official code failed on {r['official_failed']} (no point)" if r["official_failed"] else ""
        print(f"K={shot}: {r['points_per_episode']:.1f} points decoded an episode (official), {r['official_empty']} "
              f"final masks empty; {r['distinct_images']} distinct images in {r['episodes']} episodes "
              f"({r['query_images']} of them queries){failed}")  # fmt: skip
    if opts.json:
        record = {"machine": info, "settings": {k: str(v) for k, v in vars(opts).items()}, "sam2_weights": weights}
        text = json.dumps({**record, "shots": results}, indent=2)
        print(f"\nwrote {create(opts.json, lambda tmp: tmp.write_text(text), '--json')}")


if __name__ == "__main__":
    main()
