"""Tiny random-weight models built through ComfyUI's own classes (SD1.5-, SD2-v- and SDXL-shaped
UNets, their CLIPs with the real tokenizers, a VAE, a ControlNet, a CLIP vision model), the
full-size SD1.5 / SD2.1-v / SDXL layouts with random weights, and fill_random_, which writes
every model's weights. All run on the CPU in a test's time; none is a denoiser (for that see
harness.trained_model)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch

from harness.comfyui import ensure_comfyui
from harness.pack import cache_dir

if TYPE_CHECKING:  # ComfyUI is importable only after ensure_comfyui()
    import comfy.model_patcher
    import comfy.sd

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
QK_NORM_WEIGHT = 3.0
"""The weight of a transformer's query / key RMSNorms (Flux's ``query_norm``, SD3's ``ln_q``, Qwen-Image's
``norm_added_k`` …). Trained models learn weights of order one to several there; a 0.02 vector would
make q·k ≈ 0 and every joint attention uniform, so that no edit of it could change anything."""
QK_NORM_NAMES = ("query_norm", "key_norm", "ln_q", "ln_k", "norm_q", "norm_k", "q_norm", "k_norm",
                 "norm_added_q", "norm_added_k", "q_norm_x", "k_norm_x", "q_norm_y", "k_norm_y", "norm_k_img")


def _is_rms_norm(module: torch.nn.Module) -> bool:
    return "RMSNorm" in type(module).__name__  # torch's, comfy.ops', and the models' own classes


def fill_random_(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter deterministically: norm weights 1 (a transformer's query / key
    RMSNorms QK_NORM_WEIGHT), biases 0, embedding tables and other vectors normal with std 0.02,
    matrices and kernels normal with std 1/sqrt(fan_in).

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
        for module_name, submodule in module.named_modules():
            for name, param in submodule.named_parameters(recurse=False):
                if _is_rms_norm(submodule) and name in ("weight", "scale"):
                    qk = module_name.rsplit(".", 1)[-1] in QK_NORM_NAMES
                    param.fill_(QK_NORM_WEIGHT if qk else 1.0)
                elif isinstance(submodule, norms) and name == "weight":
                    param.fill_(1.0)
                elif name == "bias":
                    param.zero_()
                else:
                    fan_in = param[0].numel() if param.ndim >= 2 else 0
                    small = isinstance(submodule, torch.nn.Embedding) or fan_in == 0
                    std = EMBEDDING_STD if small else fan_in**-0.5
                    param.copy_(torch.randn(param.shape, generator=generator) * std)


def unet_config(
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

    config = unet_config(32, [1, 2], [1, 1], [1, 1, 1, 1], 1, TINY_SD15_CONTEXT_DIM, False)
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

    config = unet_config(32, [1, 2], [1, 1], [1, 1, 1, 1], 1, TINY_SD15_CONTEXT_DIM, False)
    config = {k: v for k, v in config.items() if k not in ("out_channels", "transformer_depth_output")}
    config.update(num_heads=8, num_head_channels=-1)  # what supported_models.SD15 adds to a UNet config
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, operations=comfy.ops.disable_weight_init, **config)
    fill_random_(net, seed)
    return comfy.controlnet.ControlNet(net, load_device=comfy.model_management.get_torch_device())


def tiny_sd2v_model(seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    """SD2-v-shaped V_PREDICTION ModelPatcher through supported_models.SD20: 2 levels (64, 128 ch),
    64-channel heads, linear proj_in, attn_precision fp32 (SD20's unet_extra_config), context 48.

    SD20.model_type picks v-prediction from the std of one norm bias of a real checkpoint; a
    one-key state-dict hint with that key reproduces the decision without faking the model.
    Attention keys as tiny_sd15_model.
    """
    ensure_comfyui()
    import comfy.supported_models

    config = unet_config(TINY_SD2_MODEL_CHANNELS, [1, 2], [1, 1], [1, 1, 1, 1], 1, TINY_SD2_CONTEXT_DIM, True)
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

    config = unet_config(
        32, [1, 2, 4], [0, 1, 2], [0, 0, 1, 1, 2, 2], 2, TINY_SDXL_CONTEXT_DIM, True, TINY_SDXL_ADM_CHANNELS
    )
    return _patcher(comfy.supported_models.SDXL(config), seed)


# The real layouts of full-size checkpoints (as model_detection.detect_unet_config reads them from
# the weights), with random weights: (supported_models class, unet_config arguments, text widths).
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
    model_config = getattr(comfy.supported_models, class_name)(unet_config(*unet_args))
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
