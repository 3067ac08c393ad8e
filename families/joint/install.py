"""Where the MMDiT edit (:mod:`...attention.mmdit_edit`) meets ComfyUI's joint-attention models.

Both hosts (0.3.64 … 0.33.0) call a ``patches_replace["dit"]`` patch around every Flux double and
single block (``("double_block", i)``, ``("single_block", i)``) and every SD3 joint block
(``("double_block", i)``), and hand each attention call's ``transformer_options`` to an
``optimized_attention_override``. The pack puts a :class:`~..patching.compose.ComposedBlock` on
every block, which runs the block (or the patch that was on it) with a copy of the options that
carries the edit's override where the block is chosen and the step is in the window, and the
map recorder's in the double (Flux) / joint (SD3) blocks; an override already on the model (another
node's, e.g. a different attention kernel) is called by them, and one that takes newer hosts'
attention tensor containers still gets containers (:class:`~..patching.compose.ContainerPassingOverride`).
Local blend is a post-CFG function, as on a UNet. Nothing of the blocks' code is copied.
"""

from __future__ import annotations

from ...attention.edit_plan import EditPlan
from ...attention.edit_spec import P2PEdit
from ...attention.mmdit_edit import QKEdit, QKSettings
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


def _block_arguments(edit: QKEdit, map_blocks: tuple[str, ...]):
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
        edited = edit.block_options(opts, text_length, joint_length, edits=edit.edits_block((kind, index)),
                                    records=kind in map_blocks)
        if edited is None:
            return None
        if passes_containers:
            edited["optimized_attention_override"] = ContainerPassingOverride(edited["optimized_attention_override"],
                                                                              previous)
        return {**args, "transformer_options": edited}

    return arguments


def install_qk(model, p2p_edit: P2PEdit, settings: QKSettings):
    """Return ``(patched clone, QKEdit)`` for a Flux / SD3 model; the input model is never modified.
    The ``dit`` patches and the attention override other nodes put on the model are kept and run."""
    return install_mmdit_edit(model, QKEdit(p2p_edit, settings))


def install_probabilities(model, plan: EditPlan, blocks: frozenset | None = None):
    """Return ``(patched clone, ProbabilitiesEdit)``: Prompt-to-Prompt on the image→text
    probabilities of the joint attention of ``blocks`` (None: every block), as :func:`install_qk`
    installs the qk edit."""
    return install_mmdit_edit(model, ProbabilitiesEdit(plan, blocks))


def image_grid(model, latent_image) -> tuple[int, int]:
    """The image tokens' (rows, columns) for a latent: one per patch, the last ones padded."""
    patch = int(getattr(model.model.diffusion_model, "patch_size", 2))
    height, width = latent_image.shape[-2:]
    return -(-int(height) // patch), -(-int(width) // patch)


def install_mmdit_edit(model, edit: QKEdit):
    """Return ``(patched clone, edit)`` with ``edit``'s overrides on every block of a Flux / SD3 model
    (or, for a family on the MODEL_WRAPPER route, in every call of its diffusion model)."""
    family = joint_family(model)
    if family.route == MODEL_WRAPPER:
        return install_wrapped_edit(model, edit, family, WRAPPER_KEY, FAMILY, image_grid)
    blocks = family.block_keys(model)
    p2p_edit = edit.edit
    patched = model.clone()
    install_blocks(patched, blocks, FAMILY, edit, _block_arguments(edit, family.map_blocks))
    if p2p_edit.local_blend is not None:
        set_post_cfg_blend(patched, edit.blend)

    def outer_sample(executor, noise, latent_image, *args, **kwargs):
        guider = executor.class_obj
        check_sampled_batch(p2p_edit, guider, latent_image)
        check_blocks_intact(guider.model_options, blocks, FAMILY, edit)
        edit.reset(image_grid(model, latent_image))
        return executor(noise, latent_image, *args, **kwargs)

    set_outer_sample(patched, WRAPPER_KEY, outer_sample)
    return patched, edit
