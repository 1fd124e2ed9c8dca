"""The names fssam2 knows, in one leaf module that both `fssam2.build` and `fssam2.hub` read.

`PACKAGED_CONFIGS` are the SAM2 configs `build_sam2` takes by name; `RANDOM_INIT` is the
`model.sam2_checkpoint` value that asks for a randomly initialised SAM2, and what checkpoints,
results and adapter files record for such a model. The downloadable checkpoints and their
sources stay with the downloader (`fssam2.hub.CHECKPOINT_URLS`, `HUB_CHECKPOINTS`,
`PACKAGED_CHECKPOINTS`).
"""

from __future__ import annotations

# Packaged config names -> (package holding the yaml, path inside it).
PACKAGED_CONFIGS: dict[str, tuple[str, str]] = {
    "sam2.1_hiera_t": ("sam2", "configs/sam2.1/sam2.1_hiera_t.yaml"),
    "sam2.1_hiera_s": ("sam2", "configs/sam2.1/sam2.1_hiera_s.yaml"),
    "sam2.1_hiera_b+": ("sam2", "configs/sam2.1/sam2.1_hiera_b+.yaml"),
    "sam2.1_hiera_l": ("sam2", "configs/sam2.1/sam2.1_hiera_l.yaml"),
    # SAM2 v1 (July 2024), which SANSA builds on.
    "sam2_hiera_t": ("sam2", "configs/sam2/sam2_hiera_t.yaml"),
    "sam2_hiera_s": ("sam2", "configs/sam2/sam2_hiera_s.yaml"),
    "sam2_hiera_b+": ("sam2", "configs/sam2/sam2_hiera_b+.yaml"),
    "sam2_hiera_l": ("sam2", "configs/sam2/sam2_hiera_l.yaml"),
    "fssam2_tiny": ("fssam2", "sam2_configs/fssam2_tiny.yaml"),
}

RANDOM_INIT = "random"  # model.sam2_checkpoint: a randomly initialised SAM2
