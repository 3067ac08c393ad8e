"""What the pack needs of the ComfyUI it runs in, checked once at import by feature, not version.

The oldest ComfyUI the pack is tested on is 0.3.64; the newest, 0.33.0. Older hosts that have
every feature below may work; one that lacks any is refused at import with a message that says
what to do, instead of failing later inside a sampler.
"""

from __future__ import annotations

import importlib

OLDEST_TESTED = "0.3.64"
NEWEST_TESTED = "0.33.0"

REQUIRED_FEATURES: tuple[tuple[str, str], ...] = (
    # OUTER_SAMPLE wrappers: each patch checks its batch and resets its per-run state there.
    ("comfy.patcher_extension", "WrappersMP.OUTER_SAMPLE"),
    ("comfy.model_patcher", "ModelPatcher.add_wrapper_with_key"),
    ("comfy.model_patcher", "ModelPatcher.remove_wrappers_with_key"),
    ("comfy.model_patcher", "ModelPatcher.set_model_attn1_replace"),
    ("comfy.model_patcher", "ModelPatcher.set_model_attn2_replace"),
    ("comfy.model_patcher", "ModelPatcher.set_model_sampler_post_cfg_function"),
    ("comfy.samplers", "calculate_sigmas"),
    ("comfy.model_management", "throw_exception_if_processing_interrupted"),
)


class UnsupportedComfyUIError(ImportError):
    """The host lacks a feature the pack is built on."""


def missing_features() -> list[str]:
    """The dotted names of REQUIRED_FEATURES that this ComfyUI does not have."""
    missing = []
    for module_name, attribute_path in REQUIRED_FEATURES:
        try:
            target = importlib.import_module(module_name)
            for attribute in attribute_path.split("."):
                target = getattr(target, attribute)
        except (ImportError, AttributeError):
            missing.append(f"{module_name}.{attribute_path}")
    return missing


def require_supported_comfyui() -> None:
    """Raise UnsupportedComfyUIError naming what is missing, when anything is."""
    missing = missing_features()
    if missing:
        raise UnsupportedComfyUIError(
            f"ComfyUI Prompt Edit needs ComfyUI {OLDEST_TESTED} or newer (tested {OLDEST_TESTED} to "
            f"{NEWEST_TESTED}); this ComfyUI lacks {', '.join(missing)}. Update ComfyUI (git pull in its "
            "folder, or Manager > Update ComfyUI) and restart it.")
