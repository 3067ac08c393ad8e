"""Model families: which family a ComfyUI MODEL is, and how each feature of the pack installs on it
(host code; see :mod:`.registry`). ``unet/`` holds the cross-attention UNets, ``joint/`` the
joint-attention transformers (MMDiT), one module per family with its row, ``wan/`` the
cross-attention transformer Wan (row and installer)."""

from .joint.chroma import CHROMA
from .joint.flux import FLUX
from .joint.flux2 import FLUX2
from .joint.hidream import HIDREAM
from .joint.hunyuan_image import HUNYUAN_IMAGE
from .joint.qwen_image import QWEN_IMAGE
from .joint.sd3 import SD3
from .joint.z_image import LUMINA2, Z_IMAGE
from .registry import (
    ATTENTION_OVERRIDE, CROSS_ATTENTION, DIT_BLOCKS, JOINT_ATTENTION, MODEL_WRAPPER, ModelFamily, RefusedFamily, UnsupportedModelError,
    families, family_by_id, family_of, find_family, register)
from .unet import UNET
from .wan import WAN, WAN_OTHER

for _family in (UNET, FLUX, SD3, FLUX2, CHROMA, QWEN_IMAGE, HUNYUAN_IMAGE, Z_IMAGE, LUMINA2, WAN, HIDREAM, WAN_OTHER):
    register(_family)

__all__ = ["ATTENTION_OVERRIDE", "CROSS_ATTENTION", "DIT_BLOCKS", "JOINT_ATTENTION", "MODEL_WRAPPER", "ModelFamily", "RefusedFamily",
           "UnsupportedModelError", "families", "family_by_id", "family_of", "find_family", "register"]
