"""Headless ComfyUI for the pack's tests: locating and initialising ComfyUI, importing the pack,
tiny random-weight models built through ComfyUI's own classes, a random-weight SD1.5 checkpoint
for the real loaders, UI-workflow -> API-prompt conversion and prompt execution.

Plain functions only (fixtures live in conftest.py). Nothing here mocks ComfyUI: every model,
loader, validator and executor is the real one, running on the CPU.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.machinery
import importlib.util
import inspect
import json
import logging
import math
import os
import shutil
import struct
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # ComfyUI is importable only after ensure_comfyui()
    import comfy.model_patcher
    import comfy.sd

ROOT = Path(__file__).resolve().parents[1]
"""The pack's package directory (the repository root)."""
PACK = "comfyui_prompt_edit"
SKIP_REASON = (
    "ComfyUI not found: set COMFYUI_PATH, install the pack under ComfyUI/custom_nodes, "
    "or put ComfyUI at ~/ComfyUI"
)

# Tiny model dimensions. Each family gets its own text width so that a dimension mix-up fails
# loudly instead of broadcasting silently.
TINY_SD15_CONTEXT_DIM = 32  # CLIP-L hidden size; SD1 pooled output is the unprojected one (32)
TINY_SD2_CONTEXT_DIM = 48  # CLIP-H hidden size; SD2 pooled output is projected (48)
TINY_SD2_MODEL_CHANNELS = 64  # SD20 forces 64-channel heads, so attention needs >= 64 channels
TINY_SDXL_CLIP_L_DIM = 32
TINY_SDXL_CLIP_G_DIM = 64
TINY_SDXL_CONTEXT_DIM = TINY_SDXL_CLIP_L_DIM + TINY_SDXL_CLIP_G_DIM  # cond = cat(L, G) = 96
TINY_SDXL_POOLED_DIM = TINY_SDXL_CLIP_G_DIM  # clip_g's projected pooled output = 64
TINY_SDXL_ADM_CHANNELS = TINY_SDXL_POOLED_DIM + 6 * 256  # encode_adm appends six 256-d size embeddings
EMBEDDING_STD = 0.02
"""Std of random embedding tables (CLIP's initializer_range)."""

CHECKPOINT_NAME = "tiny_sd15.safetensors"
_CHECKPOINT_RECIPE = "comfyui_prompt_edit tiny_sd15 v2"
"""Stored in the checkpoint's metadata; change it when the recipe changes to force regeneration."""


_state: dict[str, Any] = {"nodes": None, "executor": None, "server": None, "pack_error": None}


# ------------------------------------------------------------------------------------------------
# Locating and initialising ComfyUI


def find_comfyui() -> tuple[Path | None, str]:
    """Return (ComfyUI root, "") or (None, why not).

    Order: $COMFYUI_PATH, the ComfyUI whose custom_nodes/ holds this checkout, ~/ComfyUI
    (scripts/comfy_cli.py, as the command-line tools look). A candidate that is not a ComfyUI
    root (nodes.py + comfy/) is passed over.
    """
    candidates = comfy_cli.comfyui_candidates()
    for _, path in candidates:
        if comfy_cli.is_comfyui_root(path):
            return path.resolve(), ""
    return None, f"{SKIP_REASON} (tried {'; '.join(f'{label}: {path}' for label, path in candidates)})"


def ensure_comfyui() -> types.ModuleType:
    """Initialise ComfyUI headless on the CPU once and return its `nodes` module.

    Also registers the pack's nodes the way the server's loader does, so the executor and
    validator know them. A pack that fails to import is logged and recorded (see
    `pack_import_error`), as the server would: stock nodes stay usable.
    """
    if _state["nodes"] is not None:
        return _state["nodes"]
    root, reason = find_comfyui()
    if root is None:
        raise RuntimeError(reason)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if "comfy.model_management" in sys.modules:
        logging.warning("comfy.model_management was imported before ensure_comfyui(); CPU mode may not apply")
    from comfy.cli_args import args

    args.cpu = True  # read by comfy.model_management at import
    import folder_paths
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    session_dir = Path(tempfile.mkdtemp(prefix=f"{PACK}_"))
    atexit.register(shutil.rmtree, session_dir, ignore_errors=True)
    for kind, setter in (
        ("output", folder_paths.set_output_directory),
        ("temp", folder_paths.set_temp_directory),
        ("input", folder_paths.set_input_directory),
    ):
        (session_dir / kind).mkdir()
        setter(str(session_dir / kind))
    _state["nodes"] = nodes
    try:
        _register_pack_nodes(nodes, import_pack(execute_init=True))
    except Exception as error:  # the server also keeps running without a broken pack
        logging.exception("%s failed to import; only stock nodes are registered", PACK)
        _state["pack_error"] = error
    return nodes


def pack_import_error() -> BaseException | None:
    """The exception the pack's __init__ raised in ensure_comfyui(), if any."""
    return _state["pack_error"]


def import_pack(execute_init: bool) -> types.ModuleType:
    """Make `import comfyui_prompt_edit` resolve to the repository root and return the package.

    execute_init=False registers a bare package (no __init__ run, so no ComfyUI needed) through
    which submodules such as `comfyui_prompt_edit.attention.tokens` import normally.
    execute_init=True runs __init__.py, into the bare module if one exists, so submodules that
    were imported already stay the same objects. Without an __init__.py the package stays bare.
    If __init__ raises, the package is left bare and the exception propagates.
    """
    module = sys.modules.get(PACK)
    if module is None:
        spec = importlib.machinery.ModuleSpec(PACK, None, is_package=True)
        spec.submodule_search_locations = [str(ROOT)]
        module = importlib.util.module_from_spec(spec)
        module.__path__ = [str(ROOT)]
        module._harness_initialised = False
        sys.modules[PACK] = module
    if not execute_init or getattr(module, "_harness_initialised", True):
        return module
    init_file = ROOT / "__init__.py"
    if not init_file.is_file():
        return module
    spec = importlib.util.spec_from_file_location(PACK, init_file, submodule_search_locations=[str(ROOT)])
    bare_spec, bare_loader = module.__spec__, module.__loader__
    module.__spec__, module.__file__, module.__loader__ = spec, str(init_file), spec.loader
    try:
        spec.loader.exec_module(module)
    except BaseException:
        module.__spec__, module.__loader__ = bare_spec, bare_loader
        del module.__file__
        raise
    module._harness_initialised = True
    return module


def _register_pack_nodes(nodes: types.ModuleType, pack: types.ModuleType) -> None:
    """Mirror nodes.load_custom_node: V1 mappings first, else a V3 comfy_entrypoint; names that
    collide with built-in nodes are skipped (the server ignores them too, so warn)."""
    class_mappings = getattr(pack, "NODE_CLASS_MAPPINGS", None)
    display_names = getattr(pack, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
    if class_mappings is None and hasattr(pack, "comfy_entrypoint"):
        class_mappings, display_names = asyncio.run(_v3_mappings(pack.comfy_entrypoint))
    for name, cls in (class_mappings or {}).items():
        existing = nodes.NODE_CLASS_MAPPINGS.get(name)
        if existing is not None and existing is not cls:
            logging.warning("%s node %r shadows a built-in node; the server would skip it", PACK, name)
            continue
        nodes.NODE_CLASS_MAPPINGS[name] = cls
        cls.RELATIVE_PYTHON_MODULE = f"custom_nodes.{PACK}"
    nodes.NODE_DISPLAY_NAME_MAPPINGS.update(display_names)


async def _v3_mappings(entrypoint: Any) -> tuple[dict[str, type], dict[str, str]]:
    extension = entrypoint()
    if asyncio.iscoroutine(extension):
        extension = await extension
    classes, names = {}, {}
    for cls in await extension.get_node_list():
        schema = cls.GET_SCHEMA()
        classes[schema.node_id] = cls
        if schema.display_name is not None:
            names[schema.node_id] = schema.display_name
    return classes, names


# ------------------------------------------------------------------------------------------------
# Tiny random-weight models


def fill_random_(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter deterministically: norm weights 1, biases 0, embedding tables and
    other vectors normal with std 0.02, matrices and kernels normal with std 1/sqrt(fan_in).

    comfy.ops layers skip initialisation (their tensors are torch.empty), so all must be written.
    The fan-in scale keeps activations O(1) layer after layer as in a trained network; at real
    widths it is about the usual 0.02 (CLIP-L 1/sqrt(768) = 0.036, a 320-channel 3x3 conv 0.019),
    while a flat 0.02 at tiny widths leaves attention uniform and the output almost independent
    of the prompt (a cat -> dog prompt change moved a 4-step sample by 2e-4 relative, vs 1e-1).
    Values are drawn in fp32 from one seeded generator in module order, then cast.
    """
    generator = torch.Generator().manual_seed(seed)
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for submodule in module.modules():
            for name, param in submodule.named_parameters(recurse=False):
                if isinstance(submodule, norms) and name == "weight":
                    param.fill_(1.0)
                elif name == "bias":
                    param.zero_()
                else:
                    fan_in = param[0].numel() if param.ndim >= 2 else 0
                    small = isinstance(submodule, torch.nn.Embedding) or fan_in == 0
                    std = EMBEDDING_STD if small else fan_in**-0.5
                    param.copy_(torch.randn(param.shape, generator=generator) * std)


def _unet_config(
    model_channels: int,
    channel_mult: list[int],
    transformer_depth: list[int],
    transformer_depth_output: list[int],
    transformer_depth_middle: int,
    context_dim: int,
    use_linear_in_transformer: bool,
    adm_in_channels: int | None = None,
    num_res_blocks: int = 1,
) -> dict[str, Any]:
    """A UNet config with the keys model_detection.detect_unet_config would produce."""
    config = {
        "use_checkpoint": False,
        "image_size": 32,
        "use_spatial_transformer": True,
        "legacy": False,
        "adm_in_channels": adm_in_channels,
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": model_channels,
        "num_res_blocks": [num_res_blocks] * len(channel_mult),
        "transformer_depth": transformer_depth,
        "transformer_depth_output": transformer_depth_output,
        "channel_mult": channel_mult,
        "transformer_depth_middle": transformer_depth_middle,
        "use_linear_in_transformer": use_linear_in_transformer,
        "context_dim": context_dim,
        "use_temporal_resblock": False,
        "use_temporal_attention": False,
    }
    if adm_in_channels is not None:
        config["num_classes"] = "sequential"
    return config


def _patcher(
    model_config: Any, seed: int, state_dict_hint: dict[str, torch.Tensor] | None = None
) -> comfy.model_patcher.ModelPatcher:
    import comfy.model_management as mm
    import comfy.model_patcher

    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model(state_dict_hint or {})
    fill_random_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def tiny_sd15_model(seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    """SD1.5-shaped EPS ModelPatcher: 2 levels (32, 64 ch), 8 heads, context 32.

    Attention keys: ("input", 1|3, 0), ("middle", 0, 0), ("output", 0..3, 0).
    """
    ensure_comfyui()
    import comfy.supported_models

    config = _unet_config(32, [1, 2], [1, 1], [1, 1, 1, 1], 1, TINY_SD15_CONTEXT_DIM, False)
    return _patcher(comfy.supported_models.SD15(config), seed)


def tiny_sd15_controlnet(seed: int = 3) -> Any:
    """A random-weight ControlNet for tiny_sd15_model (hint: RGB image at 8x the latent size):
    ComfyUI's own cldm.ControlNet network in its comfy.controlnet.ControlNet, as its loader builds
    them (the loader's config detection knows only full-size layouts). Its zero convs are random,
    so the hint changes the result."""
    ensure_comfyui()
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management
    import comfy.ops

    config = _unet_config(32, [1, 2], [1, 1], [1, 1, 1, 1], 1, TINY_SD15_CONTEXT_DIM, False)
    config = {k: v for k, v in config.items() if k not in ("out_channels", "transformer_depth_output")}
    config.update(num_heads=8, num_head_channels=-1)  # what supported_models.SD15 adds to a UNet config
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, operations=comfy.ops.disable_weight_init, **config)
    fill_random_(net, seed)
    return comfy.controlnet.ControlNet(net, load_device=comfy.model_management.get_torch_device())


def write_tiny_sd15_lora(path: Path, model: comfy.model_patcher.ModelPatcher, rank: int = 4, seed: int = 4) -> Path:
    """A random rank-`rank` LoRA on every attention projection of `model`'s UNet, in the generic
    key format ComfyUI's LoRA loader reads (``diffusion_model.<layer>.lora_up/lora_down.weight``)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, param in model.model.diffusion_model.named_parameters():
        if ".attn" in name and name.endswith(("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")):
            layer = f"diffusion_model.{name[: -len('.weight')]}"
            out_features, in_features = param.shape
            tensors[f"{layer}.lora_down.weight"] = torch.randn(rank, in_features, generator=generator) * in_features**-0.5
            tensors[f"{layer}.lora_up.weight"] = torch.randn(out_features, rank, generator=generator) * rank**-0.5 * 0.5
    write_safetensors(tensors, path, {})
    return path


def tiny_sd2v_model(seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    """SD2-v-shaped V_PREDICTION ModelPatcher through supported_models.SD20: 2 levels (64, 128 ch),
    64-channel heads, linear proj_in, attn_precision fp32 (SD20's unet_extra_config), context 48.

    SD20.model_type picks v-prediction from the std of one norm bias of a real checkpoint; a
    one-key state-dict hint with that key reproduces the decision without faking the model.
    Attention keys as tiny_sd15_model.
    """
    ensure_comfyui()
    import comfy.supported_models

    config = _unet_config(TINY_SD2_MODEL_CHANNELS, [1, 2], [1, 1], [1, 1, 1, 1], 1, TINY_SD2_CONTEXT_DIM, True)
    v_prediction_hint = {"output_blocks.11.1.transformer_blocks.0.norm1.bias": torch.tensor([-1.0, 1.0])}
    return _patcher(comfy.supported_models.SD20(config), seed, v_prediction_hint)


def tiny_sdxl_model(seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    """SDXL-shaped EPS ModelPatcher: 3 levels (32, 64, 128 ch) with attention only on the two
    lower-resolution levels (depth 1 and 2, middle depth 2; 64-channel heads), context 96, ADM
    input pooled 64 + 6*256. Needs `pooled_output` [B, 64] in the conds.

    Attention keys: ("input", 3, 0), ("input", 5, 0|1), ("middle", 0, 0|1), ("output", 0|1, 0|1),
    ("output", 2|3, 0).
    """
    ensure_comfyui()
    import comfy.supported_models

    config = _unet_config(
        32, [1, 2, 4], [0, 1, 2], [0, 0, 1, 1, 2, 2], 2, TINY_SDXL_CONTEXT_DIM, True, TINY_SDXL_ADM_CHANNELS
    )
    return _patcher(comfy.supported_models.SDXL(config), seed)


# The real layouts of full-size checkpoints (as model_detection.detect_unet_config reads them from
# the weights), with random weights: (supported_models class, _unet_config arguments, text widths).
FULL_SIZE = {
    "sd15": ("SD15", (320, [1, 2, 4, 4], [1, 1, 1, 1, 1, 1, 0, 0], [1] * 9 + [0] * 3, 1, 768, False, None, 2),
             {"clip_l": 768}),
    "sd21v": ("SD20", (320, [1, 2, 4, 4], [1, 1, 1, 1, 1, 1, 0, 0], [1] * 9 + [0] * 3, 1, 1024, True, None, 2),
              {"clip_h": 1024}),
    "sdxl": ("SDXL", (320, [1, 2, 4], [0, 0, 2, 2, 10, 10], [0, 0, 0, 2, 2, 2, 10, 10, 10], 10, 2048, True, 2816, 2),
             {"clip_l": 768, "clip_g": 1280}),
}


def full_size_model(family: str, dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                    compute_dtype: torch.dtype | None = torch.float32) -> comfy.model_patcher.ModelPatcher:
    """The UNet of a full-size SD1.5 / SD2.1-768-v / SDXL base checkpoint (family "sd15", "sd21v",
    "sdxl"), random weights stored in `dtype` and computed in `compute_dtype` (ComfyUI's manual cast; None:
    in `dtype`), so that SDXL's 2.6 B parameters fit in 5 GB on a CPU."""
    ensure_comfyui()
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    class_name, unet_args, _ = FULL_SIZE[family]
    model_config = getattr(comfy.supported_models, class_name)(_unet_config(*unet_args))
    model_config.set_inference_dtype(dtype, None if compute_dtype in (None, dtype) else compute_dtype)
    hint = {"output_blocks.11.1.transformer_blocks.0.norm1.bias": torch.tensor([-1.0, 1.0])} if family == "sd21v" else {}
    with torch.inference_mode(False):
        model = model_config.get_model(hint)
        fill_random_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def full_width_clip(family: str, seed: int = 0) -> comfy.sd.CLIP:
    """The family's real tokenizers and text encoders at their real widths (so the conditioning has
    the real token columns and channels), but 3 layers deep: text encoding is not what is tested."""
    ensure_comfyui()
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.text_encoders.sd2_clip as sd2_clip

    widths = FULL_SIZE[family][2]
    options = {f"{name}_model_config": _clip_config(width) for name, width in widths.items()}
    tokenizer, model = {"sd15": (comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel),
                        "sd21v": (sd2_clip.SD2Tokenizer, sd2_clip.SD2ClipModel),
                        "sdxl": (comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)}[family]
    return _tiny_clip(tokenizer, model, options, seed)


def _clip_config(hidden_size: int) -> dict[str, int]:
    return {
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_attention_heads": 4,
        "num_hidden_layers": 3,  # SD2/SDXL read layer -2, which must be a middle layer
    }


def _tiny_clip(tokenizer: type, clip_model: type, model_options: dict[str, Any], seed: int) -> comfy.sd.CLIP:
    import comfy.sd
    import comfy.supported_models_base

    target = comfy.supported_models_base.ClipTarget(tokenizer, clip_model)
    # dtype: text encoders default to fp16 on the CPU; tiny tests want exact fp32.
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32, **model_options})
    fill_random_(clip.cond_stage_model, seed)
    return clip


def tiny_sd1_clip(seed: int = 0) -> comfy.sd.CLIP:
    """comfy.sd.CLIP with the real SD1 tokenizer and a 3-layer, 32-wide CLIP-L (cond [1, 77k, 32])."""
    ensure_comfyui()
    import comfy.sd1_clip

    options = {"clip_l_model_config": _clip_config(TINY_SD15_CONTEXT_DIM)}
    return _tiny_clip(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel, options, seed)


def tiny_clip_vision(projection_dim: int = TINY_SD15_CONTEXT_DIM, seed: int = 0) -> Any:
    """comfy.clip_vision.ClipVisionModel built from a tiny config (2 layers, 32 wide, 64² images in
    16² patches) whose projection matches a tiny CLIP's text projection (`projection_dim`)."""
    ensure_comfyui()
    import comfy.clip_vision

    config = {"model_type": "clip_vision_model", "hidden_act": "quick_gelu", "hidden_size": 32, "image_size": 64, "intermediate_size": 64,
              "num_attention_heads": 2, "num_channels": 3, "num_hidden_layers": 2, "patch_size": 16,
              "projection_dim": projection_dim, "layer_norm_eps": 1e-5}
    path = cache_dir() / f"tiny_clip_vision_{projection_dim}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    with torch.inference_mode(False):
        model = comfy.clip_vision.ClipVisionModel(str(path))
        fill_random_(model.model, seed)
    return model


def tiny_sd2_clip(seed: int = 0) -> comfy.sd.CLIP:
    """comfy.sd.CLIP with the real SD2 ("h", pad 0) tokenizer and a 3-layer, 48-wide CLIP-H
    (cond [1, 77k, 48], pooled [1, 48])."""
    ensure_comfyui()
    import comfy.text_encoders.sd2_clip as sd2_clip

    options = {"clip_h_model_config": _clip_config(TINY_SD2_CONTEXT_DIM)}
    return _tiny_clip(sd2_clip.SD2Tokenizer, sd2_clip.SD2ClipModel, options, seed)


def tiny_sdxl_clip(seed: int = 0) -> comfy.sd.CLIP:
    """comfy.sd.CLIP with the real SDXL tokenizers and 3-layer CLIP-L (32) + CLIP-G (64):
    cond [1, 77k, 96] = cat(L, G), pooled [1, 64]."""
    ensure_comfyui()
    import comfy.sdxl_clip

    options = {
        "clip_l_model_config": _clip_config(TINY_SDXL_CLIP_L_DIM),
        "clip_g_model_config": _clip_config(TINY_SDXL_CLIP_G_DIM),
    }
    return _tiny_clip(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel, options, seed)


def tiny_vae(seed: int = 0) -> comfy.sd.VAE:
    """comfy.sd.VAE (AutoencoderKL, ch 32, 4 levels): keeps downscale 8 and 4 latent channels.
    ComfyUI logs "Missing VAE keys" while building it; that is expected."""
    ensure_comfyui()
    import comfy.sd

    ddconfig = {
        "double_z": True,
        "z_channels": 4,
        "resolution": 64,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 1, 1, 1],
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    vae = comfy.sd.VAE(sd={}, config={"params": {"ddconfig": ddconfig, "embed_dim": 4}})
    fill_random_(vae.first_stage_model, seed)
    return vae


def run_node(cls: type, *args: Any) -> Any:
    """First output of a node class, whether it is written for the V1 or the V3 node API."""
    if hasattr(cls, "execute"):
        out = cls.execute(*args)
        return out.result[0] if hasattr(out, "result") else out[0]
    return getattr(cls(), cls.FUNCTION)(*args)[0]


def encode(clip: comfy.sd.CLIP, text: str) -> list:
    """CONDITIONING for `text`, exactly as CLIPTextEncode builds it."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


# ------------------------------------------------------------------------------------------------
# A random-weight SD1.5 checkpoint for the real loaders


def cache_dir() -> Path:
    """Per-user cache for generated files ($XDG_CACHE_HOME or ~/.cache), never inside the repo."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = (base / PACK).resolve()
    if path.is_relative_to(ROOT):
        raise RuntimeError(f"cache dir {path} is inside the repository {ROOT}")
    return path


def sd15_checkpoint_path() -> Path:
    """Where the tiny SD1.5 checkpoint is cached (its own folder, registered as a checkpoints dir)."""
    return cache_dir() / "checkpoints" / CHECKPOINT_NAME


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """The pack's atomic safetensors writer (base/safetensors_io.py)."""
    if PACK not in sys.modules:
        import_pack(execute_init=False)
    from comfyui_prompt_edit.base.safetensors_io import write_safetensors as write

    write(tensors, path, metadata)


def _safetensors_complete(path: Path) -> bool:
    """True if the file is a whole safetensors file written by this recipe."""
    return (_safetensors_metadata(path) or {}).get("recipe") == _CHECKPOINT_RECIPE


def make_sd15_checkpoint(path: Path) -> Path:
    """Write a random-weight fp16 checkpoint that CheckpointLoaderSimple detects as SD15, unless a
    complete one from this recipe is there already. Returns `path`.

    Layout as real SD1.5 files: a one-level UNet (320 ch, context 768, 25.8 M params) under
    model.diffusion_model., a full-shape CLIP-L under cond_stage_model.transformer.text_model.
    (the stock loader passes no size options, so it must be full size), and the standard SD VAE
    under first_stage_model. All three come from ComfyUI's own modules and key mapping
    (BaseModel.state_dict_for_saving). The file is about 470 MB; it is written atomically.
    """
    path = Path(path)
    if _safetensors_complete(path):
        return path
    ensure_comfyui()
    import comfy.ldm.models.autoencoder
    import comfy.sd1_clip
    import comfy.supported_models
    import comfy.utils

    half = torch.float16
    config = _unet_config(320, [1], [1], [1, 1], 1, 768, False)
    model_config = comfy.supported_models.SD15(config)
    model_config.set_inference_dtype(half, None)
    model = model_config.get_model({})
    fill_random_(model.diffusion_model, seed=0)
    clip = comfy.sd1_clip.SD1ClipModel(dtype=half)
    fill_random_(clip, seed=1)
    ddconfig = {
        "double_z": True,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=4).to(half)
    fill_random_(vae, seed=2)
    parts = {"clip_state_dict": clip.state_dict(), "vae_state_dict": vae.state_dict()}
    if "unet_state_dict" in inspect.signature(model.state_dict_for_saving).parameters:
        parts["unet_state_dict"] = model.diffusion_model.state_dict()  # an argument since ComfyUI 0.11
    state_dict = model.state_dict_for_saving(**parts)
    state_dict = {k: v.to(half).contiguous() for k, v in state_dict.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(state_dict, path, {"recipe": _CHECKPOINT_RECIPE})
    return path


CLIP_VISION_NAME = "clip_vision_vit_l_14_random.safetensors"


def make_clip_vision_file(path: Path | None = None) -> Path:
    """A random-weight CLIP vision model in the smallest layout ComfyUI's CLIPVisionLoader
    recognises (ViT-L/14 at 224², projection 768 = the SD1.5 text width), fp16, about 600 MB;
    written once into the user cache (atomically) unless a complete one is there."""
    path = Path(path or cache_dir() / "clip_vision" / CLIP_VISION_NAME)
    if (_safetensors_metadata(path) or {}).get("recipe") == "vit-l-14 random v1":
        return path
    ensure_comfyui()
    import comfy.clip_vision

    config = Path(comfy.clip_vision.__file__).parent / "clip_vision_config_vitl.json"
    with torch.inference_mode(False):
        model = comfy.clip_vision.ClipVisionModel(str(config))
        fill_random_(model.model, seed=5)
        state_dict = {k: v.detach().to(torch.float16).contiguous() for k, v in model.get_sd().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(state_dict, path, {"recipe": "vit-l-14 random v1"})
    return path


def register_checkpoint_dir(directory: Path) -> None:
    """Add `directory` to ComfyUI's "checkpoints" search paths (idempotent)."""
    ensure_comfyui()
    import folder_paths

    folder_paths.add_model_folder_path("checkpoints", str(directory))


# ------------------------------------------------------------------------------------------------
# A briefly trained tiny SD1.5: a real (if small) denoiser
#
# Random-weight UNets are not denoisers, so reconstruction tests (DDIM inversion followed by
# sampling) are meaningless on them (relative error ~3). trained_tiny_sd15() trains the UNet of
# tiny_sd15_model on a synthetic, caption-conditioned latent dataset for about a minute on two CPU
# cores, once per recipe, and caches the weights.
#
# Why the dataset looks as it does (measured with 20-step ddim_uniform inversion + euler at cfg 1):
# - Each caption has two discrete variants (its shape in the upper left or the lower right) that are
#   far apart (relative distance ~0.6). Deterministic inversion maps well-separated modes back onto
#   themselves exactly, so a reconstruction error well below that distance proves that the
#   inverted noise carries the sample, not just the caption.
# - Continuous jitter is tiny (~1 %): a 20-step first-order inversion loses 30-80 % of any
#   Gaussian-like variation (the larger, the more of the trajectory bends), which would put a floor
#   under the reconstruction error.
# - Latents have rms 2 in model space (real SD1.5 latents: ~1). The UNet's ε error at high σ is
#   multiplied by σ in the denoised estimate, so relative errors shrink as the data grow
#   (rms 0.55 / 1.0 / 1.5 / 2.0 gave mean errors 0.08 / 0.045 / 0.040 / 0.031). Part of that ε
#   error is structural: at 8x8 the output GroupNorm (one channel per group at 32 channels)
#   normalises each channel over only 64 pixels, which hides the noise's per-channel mean.

TRAINED_CAPTIONS = (
    "a red square",
    "a blue circle",
    "a green stripe",
    "a yellow cross",
    "a white ring",
    "a purple triangle",
)
"""The training captions, in class order (trained_dataset lists latents in this order)."""
TRAINED_LATENT_SIZE = 8
"""Height and width of the training latents (the model accepts other sizes, it was not trained on them)."""
TRAINED_CACHE_NAME = "trained_tiny_sd15_v1.safetensors"

# Unit latent directions for the colours: chosen so that ComfyUI's SD1.5 latent->RGB preview shows
# roughly that colour (least-squares inverse of its preview matrix, normalised). Blue = -yellow and
# green = -purple, as their RGB values are opposite.
_TRAINED_COLOURS = {
    "red": (0.29, -0.30, -0.91, 0.04),
    "blue": (-0.10, -0.80, 0.21, -0.56),
    "green": (-0.30, 0.58, 0.55, 0.52),
    "yellow": (0.10, 0.80, -0.21, 0.56),
    "white": (0.53, 0.75, -0.18, -0.36),
    "purple": (0.30, -0.58, -0.55, -0.52),
}
_TRAINED_RMS = 2.0  # rms of a clean centred pattern, model space (LATENT space: / 0.18215)
_TRAINED_RADIUS = 1.8  # shape size in latent pixels
_TRAINED_EDGE = 3.0  # sigmoid edge steepness per pixel: smooth shapes are easier to learn
_TRAINED_MODE_SHIFT = 1.0  # the two variants are shifted by -+(1, 1) pixels
_TRAINED_JITTER = {"shift": 0.02, "size": 0.01, "colour": 0.01, "pixel": 0.003}
_TRAINED_STEPS = 160
_TRAINED_BATCH = 32
_TRAINED_LR = 3e-3
_TRAINED_WARMUP = 20
_TRAINED_UNCOND_RATE = 0.1  # empty-prompt context this often, so that CFG has an uncond to use
_TRAINED_LOG_SIGMA_RATE = 0.5  # this share of σ log-uniform over the table, the rest uniform in t
_TRAINED_THREADS = 2
_TRAINED_RECIPE = (
    "comfyui_prompt_edit trained_tiny_sd15 v1: tiny_sd15_model + tiny_sd1_clip(0), "
    f"{len(TRAINED_CAPTIONS)} captions x 2 modes, {TRAINED_LATENT_SIZE}px, rms {_TRAINED_RMS}, "
    f"jitter {sorted(_TRAINED_JITTER.items())}, AdamW lr {_TRAINED_LR} wd 0.01 warmup {_TRAINED_WARMUP} cosine, "
    f"{_TRAINED_STEPS} x {_TRAINED_BATCH}, uncond {_TRAINED_UNCOND_RATE}, log-sigma {_TRAINED_LOG_SIGMA_RATE}"
)
"""Stored in the cached file's metadata (with the seed); change it with the recipe to retrain."""


def _shape_masks(shapes: list[str], u: torch.Tensor, v: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Soft [0, 1] masks [n, H, W] of each sample's shape, centred at u = v = 0 (pixels)."""

    def inside(distance: torch.Tensor) -> torch.Tensor:  # soft "distance > 0"
        return torch.sigmoid(_TRAINED_EDGE * distance)

    r = radius[:, None, None]
    masks = []
    for i, shape in enumerate(shapes):
        ui, vi, ri = u[i], v[i], r[i]
        if shape == "square":
            mask = inside(ri - ui.abs()) * inside(ri - vi.abs())
        elif shape == "circle":
            mask = inside(ri - ui.hypot(vi))
        elif shape == "stripe":
            mask = inside(0.5 * ri - vi.abs())
        elif shape == "cross":
            bars = torch.maximum(inside(0.45 * ri - ui.abs()), inside(0.45 * ri - vi.abs()))
            mask = bars * inside(1.6 * ri - ui.abs()) * inside(1.6 * ri - vi.abs())
        elif shape == "ring":
            mask = inside(0.45 * ri - (ui.hypot(vi) - ri).abs())
        elif shape == "triangle":
            mask = inside(vi + ri) * inside(ri - vi - 2 * ui.abs())
        else:
            raise ValueError(f"unknown shape {shape!r}")
        masks.append(mask)
    return torch.stack(masks)


def _trained_colour_vectors() -> torch.Tensor:
    """[classes, 4] colour vectors, scaled so that every clean centred pattern has rms _TRAINED_RMS
    (equal norms: no caption is learnt better just because its pattern is larger)."""
    grid = torch.arange(TRAINED_LATENT_SIZE, dtype=torch.float32) - (TRAINED_LATENT_SIZE - 1) / 2
    count = len(TRAINED_CAPTIONS)
    u = grid[None, None, :].expand(count, TRAINED_LATENT_SIZE, TRAINED_LATENT_SIZE)
    v = grid[None, :, None].expand(count, TRAINED_LATENT_SIZE, TRAINED_LATENT_SIZE)
    shapes = [caption.split()[-1] for caption in TRAINED_CAPTIONS]
    masks = _shape_masks(shapes, u, v, torch.full((count,), _TRAINED_RADIUS))
    colours = torch.tensor([_TRAINED_COLOURS[caption.split()[1]] for caption in TRAINED_CAPTIONS])
    colours = colours / colours.norm(dim=1, keepdim=True)
    target_norm = _TRAINED_RMS * (4 * TRAINED_LATENT_SIZE**2) ** 0.5
    return colours * (target_norm / masks.flatten(1).norm(dim=1))[:, None]


def _trained_latents(labels: torch.Tensor, modes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Model-space latents [n, 4, S, S]: caption `labels[i]`'s shape in variant `modes[i]` (0: upper
    left, 1: lower right) on a near-zero background, with small random jitter from `generator`."""
    n, size = len(labels), TRAINED_LATENT_SIZE
    jitter = _TRAINED_JITTER

    def uniform(*shape: int) -> torch.Tensor:  # in [-1, 1)
        return torch.rand(shape, generator=generator) * 2 - 1

    shift = uniform(n, 2) * jitter["shift"] + (modes.float() * 2 - 1)[:, None] * _TRAINED_MODE_SHIFT
    radius = _TRAINED_RADIUS * (1 + uniform(n) * jitter["size"])
    colour = _trained_colour_vectors()[labels] + jitter["colour"] * torch.randn(n, 4, generator=generator)
    background = jitter["colour"] * torch.randn(n, 4, generator=generator)
    pixel_noise = jitter["pixel"] * torch.randn(n, 4, size, size, generator=generator)
    grid = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    v = (grid[None, :, None] - shift[:, 0, None, None]).expand(n, size, size)
    u = (grid[None, None, :] - shift[:, 1, None, None]).expand(n, size, size)
    shapes = [TRAINED_CAPTIONS[int(label)].split()[-1] for label in labels]
    masks = _shape_masks(shapes, u, v, radius)[:, None]
    return background[:, :, None, None] + (colour - background)[:, :, None, None] * masks + pixel_noise


def trained_dataset(clip: Any = None, per_caption: int = 2, seed: int = 1) -> tuple[torch.Tensor, list[str]]:
    """In-distribution latents of trained_tiny_sd15 and their captions: (latents [n, 4, 8, 8],
    captions), caption-major in TRAINED_CAPTIONS order, variants alternating (0, 1, 0, ...), so the
    default gives both variants of every caption and `latents[0]` is "a red square", upper left.

    The latents are in LATENT space, i.e. what a LATENT dict's "samples" holds (what VAEEncode
    would give): feed them to nodes as {"samples": latents}; `model.model.process_latent_in(...)`
    gives the model-space values that apply_model sees. `clip` is not used: the data do not depend
    on it (accepted so that calls can read `trained_dataset(clip)`). `seed` picks the jitter; the
    training run uses its own stream.
    """
    count = len(TRAINED_CAPTIONS)
    labels = torch.arange(count).repeat_interleave(per_caption)
    modes = torch.arange(per_caption).remainder(2).repeat(count)
    latents = _trained_latents(labels, modes, torch.Generator().manual_seed(seed))
    captions = [TRAINED_CAPTIONS[int(label)] for label in labels]
    return latents / _sd15_scale_factor(), captions


def _sd15_scale_factor() -> float:
    """SD1.5's latent scale (process_latent_in multiplies by it), read from ComfyUI when it is there."""
    if _state["nodes"] is not None:
        import comfy.latent_formats

        return float(comfy.latent_formats.SD15().scale_factor)
    return 0.18215


def trained_tiny_sd15_path(seed: int = 0) -> Path:
    """Where trained_tiny_sd15(seed) caches its UNet weights."""
    if seed == 0:
        return cache_dir() / TRAINED_CACHE_NAME
    return cache_dir() / TRAINED_CACHE_NAME.replace(".safetensors", f"_seed{seed}.safetensors")


def _safetensors_metadata(path: Path) -> dict[str, str] | None:
    """The metadata of a complete safetensors file (size matches its header), else None."""
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        size = path.stat().st_size
    except (OSError, ValueError, struct.error):
        return None
    data_end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size != 8 + header_len + data_end:
        return None
    return header.get("__metadata__", {})


def trained_tiny_sd15_info(seed: int = 0) -> dict[str, Any] | None:
    """What the cached training run recorded (recipe, seconds, loss by tenth of the run, threads),
    or None if there is no valid cache for this recipe and seed."""
    metadata = _safetensors_metadata(trained_tiny_sd15_path(seed))
    if metadata is None or metadata.get("recipe") != f"{_TRAINED_RECIPE} seed={seed}":
        return None
    return {
        "recipe": metadata["recipe"],
        "seconds": float(metadata["seconds"]),
        "loss_by_tenth": json.loads(metadata["loss_by_tenth"]),
        "threads": int(metadata["threads"]),
    }


def trained_tiny_sd15(seed: int = 0) -> tuple[comfy.model_patcher.ModelPatcher, comfy.sd.CLIP]:
    """(ModelPatcher, CLIP): tiny_sd15_model(seed) trained briefly on trained_dataset's distribution,
    and the frozen tiny_sd1_clip() (seed 0) whose encodings it was trained on.

    Everything else treats it as the plain tiny SD1.5 (SD15 class, EPS, context 32); only its
    weights differ. The first call for a recipe and seed trains (about a minute on 2 CPU threads,
    deterministic given the seed on one machine) and writes trained_tiny_sd15_path(seed)
    atomically; later calls load that file (well under a second). The model is built outside
    inference mode, so it holds normal tensors even when called inside one.
    """
    ensure_comfyui()
    import comfy.utils

    path = trained_tiny_sd15_path(seed)
    recipe = f"{_TRAINED_RECIPE} seed={seed}"
    with torch.inference_mode(False):
        model = tiny_sd15_model(seed)
        clip = tiny_sd1_clip()
        net = model.model.diffusion_model
        if trained_tiny_sd15_info(seed) is not None:
            net.load_state_dict(comfy.utils.load_torch_file(str(path)))
            return model, clip
        logging.info("training trained_tiny_sd15(seed=%d) once; cached as %s", seed, path)
        seconds, losses = _train_tiny_sd15(model, clip, seed)
        tenth = len(losses) // 10
        loss_by_tenth = [round(sum(losses[i : i + tenth]) / tenth, 4) for i in range(0, tenth * 10, tenth)]
        metadata = {
            "recipe": recipe,
            "seconds": f"{seconds:.1f}",
            "loss_by_tenth": json.dumps(loss_by_tenth),
            "threads": str(_TRAINED_THREADS),
        }
        state_dict = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(state_dict, path, metadata)
    return model, clip


def _caption_context(clip: comfy.sd.CLIP, text: str) -> torch.Tensor:
    """The cross-attention context [1, 77, 32] that CLIPTextEncode gives for `text`."""
    with torch.no_grad():
        return encode(clip, text)[0][0].detach().clone()


def _train_tiny_sd15(
    model: comfy.model_patcher.ModelPatcher, clip: comfy.sd.CLIP, seed: int
) -> tuple[float, list[float]]:
    """Train model's UNet in place with the ε objective in ComfyUI's parameterisation; the CLIP
    stays frozen (as in SD). Returns (seconds, loss per step).

    Per step: x0 from _trained_latents (captions cycled evenly), σ from the model_sampling table
    (half uniform in t as in SD, half log-uniform in σ: the inversion's last, big step from
    σ(t=1) = 0.04 to σ(t=51) = 0.23 needs the low-σ end), x = x0 + σ·ε, D = apply_model(x, σ,
    context), loss = mse((x - D)/σ, ε). The empty-prompt context replaces the caption 10 % of the
    time (CFG dropout). The output conv starts at zero, so the first prediction is ε = 0 (loss 1)
    instead of random noise. Needs grad mode, hence inference_mode(False): nodes run under inference mode.
    """
    net = model.model.diffusion_model
    sigmas = model.get_model_object("model_sampling").sigmas.detach().clone()  # ascending, t = 0..999
    log_low, log_high = sigmas[0].log(), sigmas[-1].log()
    contexts = torch.cat([_caption_context(clip, caption) for caption in TRAINED_CAPTIONS])
    empty = _caption_context(clip, "")
    generator = torch.Generator().manual_seed(seed)
    batch, count = _TRAINED_BATCH, len(TRAINED_CAPTIONS)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(_TRAINED_THREADS)
    # ComfyUI builds diffusion models with requires_grad=False since 0.31: train with it on,
    # then put each parameter's flag back as the host left it.
    frozen = [p for p in net.parameters() if not p.requires_grad]
    try:
        with torch.inference_mode(False), torch.enable_grad():
            net.requires_grad_(True)
            with torch.no_grad():
                net.out[-1].weight.zero_()
                net.out[-1].bias.zero_()
            optimizer = torch.optim.AdamW(net.parameters(), lr=_TRAINED_LR, weight_decay=0.01)

            def lr_factor(step: int) -> float:  # linear warmup, cosine decay to 5 %
                warm = min(1.0, (step + 1) / _TRAINED_WARMUP)
                return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / _TRAINED_STEPS)))

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
            losses = []
            start = time.perf_counter()
            for step in range(_TRAINED_STEPS):
                labels = (torch.arange(batch) + step) % count
                modes = torch.randint(0, 2, (batch,), generator=generator)
                x0 = _trained_latents(labels, modes, generator)
                uncond = torch.rand(batch, generator=generator) < _TRAINED_UNCOND_RATE
                context = torch.where(uncond[:, None, None], empty, contexts[labels])
                t = torch.randint(0, len(sigmas), (batch,), generator=generator)
                log_sigma = log_low + (log_high - log_low) * torch.rand(batch, generator=generator)
                t_log = torch.searchsorted(sigmas, log_sigma.exp()).clamp(max=len(sigmas) - 1)
                use_log = torch.rand(batch, generator=generator) < _TRAINED_LOG_SIGMA_RATE
                sigma = sigmas[torch.where(use_log, t_log, t)]
                noise = torch.randn(x0.shape, generator=generator)
                s = sigma[:, None, None, None]
                x = x0 + s * noise
                denoised = model.model.apply_model(x, sigma, c_crossattn=context)
                loss = torch.nn.functional.mse_loss((x - denoised) / s, noise)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
            seconds = time.perf_counter() - start
        net.zero_grad(set_to_none=True)
    finally:
        for parameter in frozen:
            parameter.requires_grad_(False)
        torch.set_num_threads(previous_threads)
    return seconds, losses


# ------------------------------------------------------------------------------------------------
# Workflows and executing API prompts (scripts/workflow_api.py and scripts/comfy_cli.py, shared with
# the pack's command-line tools)


def _script_module(name: str) -> types.ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


workflow_api = _script_module("workflow_api")
comfy_cli = _script_module("comfy_cli")
load_workflow = workflow_api.load_workflow
ui_to_api = workflow_api.ui_to_api
_widget_slots = workflow_api._widget_slots
StubServer = comfy_cli.StubServer


def run_api_prompt(prompt: dict, fresh_executor: bool = False, extra_data: dict | None = None) -> dict:
    """Validate and execute an API prompt as the server's worker does; return history outputs.

    One executor (CLASSIC cache) is kept per session, so an unchanged node is served from the
    cache on a later run just as in the server; fresh_executor=True runs on an empty cache.
    Raises AssertionError with the validation errors or with the failing node's exception.
    """
    ensure_comfyui()
    if fresh_executor or _state["executor"] is None:
        executor, server = comfy_cli.new_executor()
        if not fresh_executor:
            _state["executor"], _state["server"] = executor, server
    else:
        executor, server = _state["executor"], _state["server"]
    try:
        return comfy_cli.execute_prompt(prompt, executor, server, {"client_id": "comfy_harness", **(extra_data or {})})
    except comfy_cli.WorkflowError as error:
        raise AssertionError(str(error)) from None


def output_images(outputs: dict, node_id: str | None = None) -> list[np.ndarray]:
    """Images (H, W, C uint8 arrays) that SaveImage/PreviewImage nodes reported in `outputs`
    (all nodes, or only `node_id`), read back from disk."""
    selected = [outputs[node_id]] if node_id is not None else list(outputs.values())
    return [read_output_image(entry) for output in selected for entry in output.get("images", [])]


def read_output_image(entry: dict) -> np.ndarray:
    """Read one {"filename", "subfolder", "type"} entry as an (H, W, C) uint8 array."""
    ensure_comfyui()
    import folder_paths
    from PIL import Image

    directory = folder_paths.get_directory_by_type(entry.get("type", "output"))
    if directory is None:
        raise ValueError(f"unknown image type {entry.get('type')!r}")
    with Image.open(Path(directory) / entry.get("subfolder", "") / entry["filename"]) as image:
        return np.asarray(image).copy()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_workflow_embedding_vae(path: Path) -> None:
    """A small embedding VAE for the test checkpoint's 77 x 768 embeddings (sequence MLP, weights
    nudged off the zero-initialised identity so it varies what it is given), saved under ``path``
    as a trainer would: conditional if the file name says so, else null-text. What the example
    workflows' Load Embedding VAE nodes load in the tests."""
    from comfyui_prompt_edit.vae_embed.checkpoint import TrainedEmbeddingVAE
    from comfyui_prompt_edit.vae_embed.model import EmbeddingVAE, EmbeddingVAEConfig

    generator = torch.Generator().manual_seed(0)
    vae = EmbeddingVAE(EmbeddingVAEConfig("sequence_mlp", 77, 768, latent=8, hidden=32)).requires_grad_(False)
    for parameter in vae.parameters():
        parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    TrainedEmbeddingVAE(vae, "conditional" if "conditional" in path.name else "null-text").save(path)
