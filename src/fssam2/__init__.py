"""fssam2: few-shot semantic segmentation with SAM2's memory and LoRA (FS-SAM2)."""

from fssam2.build import build_sam2
from fssam2.errors import InputError
from fssam2.lora import LoRAConfig, inject_lora, load_lora_state_dict, lora_state_dict
from fssam2.model import FewShotSAM2

__all__ = [
    "FewShotSAM2",
    "InputError",
    "LoRAConfig",
    "build_sam2",
    "inject_lora",
    "load_lora_state_dict",
    "lora_state_dict",
]
