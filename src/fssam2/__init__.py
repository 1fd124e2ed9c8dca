"""fssam2: few-shot semantic segmentation with SAM2's memory and LoRA (FS-SAM2)."""

from fssam2.build import build_sam2
from fssam2.errors import InputError
from fssam2.lora import LoRAConfig, inject_lora, load_lora_state_dict, lora_state_dict
from fssam2.methods import FewShotSAM2
from fssam2.metric import FewShotIoU
from fssam2.segment import Segmenter

__all__ = [
    "FewShotIoU",
    "FewShotSAM2",
    "InputError",
    "LoRAConfig",
    "Segmenter",
    "build_sam2",
    "inject_lora",
    "load_lora_state_dict",
    "lora_state_dict",
]
