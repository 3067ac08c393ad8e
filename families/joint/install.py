"""Where the MMDiT edit (:mod:`...attention.mmdit_edit`) meets ComfyUI's joint-attention models: every
family whose registry row says its text and image meet in joint attention (``is_joint``).

ComfyUI calls a ``patches_replace["dit"]`` patch around every block of these transformers (the
keys the family's ``block_keys`` gives, e.g. Flux's ``("double_block", i)`` and
``("single_block", i)``, SD3's joint blocks as ``("double_block", i)``), and hands each attention
call's ``transformer_options`` to an ``optimized_attention_override``. The pack puts a
:class:`~..patching.compose.ComposedBlock` on every block, which runs the block (or the patch that
was on it) with a copy of the options that carries the edit's override where the block is chosen
and the step is in the window, and the map recorder's in the family's ``map_blocks`` (Flux's
double, SD3's joint blocks); an override already on the model (another
node's, e.g. a different attention kernel) is called by them, and one that takes newer hosts'
attention tensor containers still gets containers (:class:`~..patching.compose.ContainerPassingOverride`).
Local blend is a post-CFG function, as on a UNet. Nothing of the blocks' code is copied.
"""

from __future__ import annotations

from ...attention.edit_plan import EditPlan
from ...attention.edit_spec import P2PEdit
from ...attention.joint_order import host_order_view, text_first_view
from ...attention.mmdit_edit import QKEdit, QKSettings
from ...attention.mmdit_maps import ALL_COLUMNS, PromptColumns
from ...attention.mmdit_probabilities import ProbabilitiesEdit
from ...attention.sampled_batch import check_sampled_batch
from ...patching.comfy_model import check_blocks_intact, install_blocks, set_outer_sample, set_post_cfg_blend
from ...patching.compose import ContainerPassingOverride, takes_containers
from ..registry import MODEL_WRAPPER, ModelFamily, UnsupportedModelError, family_of
from .wrapper_route import install_wrapped_edit

WRAPPER_KEY = "prompt_edit_p2p_mmdit"
FAMILY = "P2P Attention Control"


def joint_family(model) -> ModelFamily:
    """The model's family, refused unless its text and image meet in joint attention."""
    family = family_of(model)
    if not family.is_joint:
        raise UnsupportedModelError(f"{family.name} is not a joint-attention transformer")
    return family


def block_keys(model) -> list[tuple[str, int]]:
    """Every transformer block of the model as its ``dit`` patch key, in call order."""
    return joint_family(model).block_keys(model)


def prompt_columns(family: ModelFamily, text_length: int | None, num_columns: int) -> PromptColumns:
    """Where the prompts' columns lie in the model's text: after the zeros a model that left-pads
    its context (Flux.2, to 512) put before a shorter prompt; all of the text for every other model."""
    pads_to = family.pads_text_left_to
    if not pads_to or text_length != pads_to or not 0 < num_columns < text_length:
        return ALL_COLUMNS
    return PromptColumns(offset=text_length - num_columns)


def _block_arguments(edit: QKEdit, family: ModelFamily, image_first: bool):
    map_blocks = family.map_blocks

    def arguments(kind: str, index: int, args: dict) -> dict | None:
        opts = args.get("transformer_options") or {}
        if kind == "double_block":  # [B, T, D] text and [B, N, D] image streams
            text_length = args["txt"].shape[1]
            joint_length = text_length + args["img"].shape[1]
        else:  # Flux single block: one [B, T + N, D] stream; 0.33.0 also says where the image starts
            img_slice = opts.get("img_slice")
            text_length = int(img_slice[0]) if img_slice else None
            joint_length = args["img"].shape[1]
        previous = opts.get("optimized_attention_override")
        passes_containers = takes_containers(previous)
        if passes_containers:  # the edit's overrides chain to a host function that hands on containers
            opts = {key: value for key, value in opts.items() if key != "optimized_attention_override"}
        text = text_length if text_length is not None else edit.block_text_length  # single blocks: the last double's
        layout = prompt_columns(family, text, edit.edit.num_columns)
        if image_first and text is not None:  # the edit sees [text, image]; the host its own order
            opts = {**opts, "optimized_attention_override": host_order_view(
                opts.get("optimized_attention_override"), text, joint_length)}
        edited = edit.block_options(opts, text_length, joint_length, edits=edit.edits_block((kind, index)),
                                    records=kind in map_blocks, layout=layout)
        if edited is None:
            return None
        if image_first and text is not None:
            edited["optimized_attention_override"] = text_first_view(edited["optimized_attention_override"], text,
                                                                     joint_length)
        if passes_containers:
            edited["optimized_attention_override"] = ContainerPassingOverride(edited["optimized_attention_override"],
                                                                              previous)
        return {**args, "transformer_options": edited}

    return arguments


def install_qk(model, p2p_edit: P2PEdit, settings: QKSettings):
    """Return ``(patched clone, QKEdit)`` for a joint-attention model; the input model is never modified.
    The ``dit`` patches and the attention override other nodes put on the model are kept and run."""
    return install_mmdit_edit(model, QKEdit(p2p_edit, settings))


def install_probabilities(model, plan: EditPlan, blocks: frozenset | None = None):
    """Return ``(patched clone, ProbabilitiesEdit)``: Prompt-to-Prompt on the image→text
    probabilities of the joint attention of ``blocks`` (None: every block), as :func:`install_qk`
    installs the qk edit."""
    return install_mmdit_edit(model, ProbabilitiesEdit(plan, blocks))


def image_grid(model, latent_image) -> tuple[int, int]:
    """The image tokens' (rows, columns) for a latent: one per patch, the last ones padded."""
    patch = getattr(model.model.diffusion_model, "patch_size", 2)
    rows, columns = (patch, patch) if isinstance(patch, int) else patch[-2:]  # HunyuanImage: [1, 1]
    height, width = latent_image.shape[-2:]
    return -(-int(height) // int(rows)), -(-int(width) // int(columns))


# ComfyUI's Flux KV Cache (comfy_extras/nodes_flux.py) keeps the reference images' keys and values
# from the first step in this attn1 patch and drops their tokens from the joint attention after it:
# the edit's [text, image, reference] layout and per-item references would no longer hold.
KV_CACHE_PATCH = "KV_Attn_Input"


def refuse_kv_cache(model_options: dict) -> None:
    """Refuse a model that went through Flux KV Cache (before or after the edit), naming it."""
    patches = model_options.get("transformer_options", {}).get("patches", {}).get("attn1_patch", [])
    if any(type(patch).__name__ == KV_CACHE_PATCH for patch in patches):
        raise UnsupportedModelError(
            f"{FAMILY}: this MODEL went through Flux KV Cache, which reuses the reference images' first keys and "
            "values and drops their tokens from the joint attention, so the edit cannot hold the image; remove "
            "Flux KV Cache from the graph (it only saves time)")


def install_mmdit_edit(model, edit: QKEdit):
    """Return ``(patched clone, edit)`` with ``edit``'s overrides on every block of a joint-attention model
    (or, for a family on the MODEL_WRAPPER route, in every call of its diffusion model)."""
    refuse_kv_cache(model.model_options)
    family = joint_family(model)
    if family.route == MODEL_WRAPPER:
        return install_wrapped_edit(model, edit, family, WRAPPER_KEY, FAMILY, image_grid)
    blocks = family.block_keys(model)
    p2p_edit = edit.edit
    patched = model.clone()
    install_blocks(patched, blocks, FAMILY, edit, _block_arguments(edit, family, family.image_first(model)))
    if p2p_edit.local_blend is not None:
        set_post_cfg_blend(patched, edit.blend)

    def outer_sample(executor, noise, latent_image, *args, **kwargs):
        guider = executor.class_obj
        check_sampled_batch(p2p_edit, guider, latent_image)
        check_blocks_intact(guider.model_options, blocks, FAMILY, edit)
        refuse_kv_cache(guider.model_options)
        edit.reset(image_grid(model, latent_image))
        return executor(noise, latent_image, *args, **kwargs)

    set_outer_sample(patched, WRAPPER_KEY, outer_sample)
    return patched, edit
