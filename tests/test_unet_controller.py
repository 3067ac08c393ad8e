"""The controller edits only conditional chunks, whatever the host's chunk order or split."""

import pytest
import torch

from comfyui_prompt_edit.attention.unet_controller import LayerLayout, P2PController
from comfyui_prompt_edit.attention.edit_plan import align_plan
from comfyui_prompt_edit.attention.edit_spec import ControlSettings, LocalBlend, P2PEdit, Reweight
from comfyui_prompt_edit.attention.step_window import Window
from comfyui_prompt_edit.patching.compose import ComposedAttention

from synthetic import HEADS, make_prompt, qkv, sdpa

LAYOUT = LayerLayout({("input", 1, 0): 0, ("input", 4, 0): 1, ("middle", 0, 0): 2, ("output", 3, 0): 1})
SCHEDULE = torch.linspace(10.0, 0.0, 11)


def host(q, k, v, heads, opts):
    return sdpa(q, k, v, heads)


def cross_attention(ctl: P2PController) -> ComposedAttention:
    """The controller's attn2 patch as the installer puts it on a layer with no earlier patch: the
    edited attention where the call edits, else the host's."""
    return ComposedAttention("P2P Attention Control", ctl, ctl.edited_cross_attention, host)


def self_attention(ctl: P2PController) -> ComposedAttention:
    """The controller's attn1 patch, as :func:`cross_attention`."""
    return ComposedAttention("P2P Attention Control", ctl, ctl.edited_self_attention, host)


def controller(kind="replace", path="fast", blend=False, self_end=0.5, threshold=0.3):
    source = make_prompt("a cat on a mat")
    targets = (make_prompt("a dog on a mat"), make_prompt("a fox on a mat"))
    if kind == "identity":
        kind, targets = "replace", (source, source)
    edit = P2PEdit(source, targets).with_reweight(Reweight(("mat",), 2.0))
    if blend:
        edit = edit.with_local_blend(LocalBlend((("cat",),), (("dog",), ("fox",)), threshold, 0.0))
    settings = ControlSettings(kind=kind, cross_window=Window(0, 0.8), self_window=Window(0, self_end), self_layers="all")
    return P2PController(align_plan(edit, settings), LAYOUT, host, path)


def opts(chunks, step=0, block=("output", 3), hw=(4, 4)):
    return {
        "cond_or_uncond": chunks, "sigmas": SCHEDULE[step : step + 1].clone(), "sample_sigmas": SCHEDULE,
        "block": block, "block_index": 0, "n_heads": HEADS, "activations_shape": [0, 0, *hw],
    }


@pytest.mark.parametrize("attn", ["cross", "self"])
def test_unconditional_chunk_is_never_modified(attn):
    ctl = controller()
    q, k, v = qkv(6, 16, 77 if attn == "cross" else 16)
    fn = cross_attention(ctl) if attn == "cross" else self_attention(ctl)
    out = fn(q, k, v, opts([1, 0]))
    torch.testing.assert_close(out[:3], sdpa(q[:3], k[:3], v[:3]))  # rows of the uncond chunk
    assert not torch.allclose(out[4:], sdpa(q[4:], k[4:], v[4:]))  # the edits did change


@pytest.mark.parametrize("attn", ["cross", "self"])
def test_split_cond_and_uncond_calls_equal_one_batched_call(attn):
    ctl = controller()
    q, k, v = qkv(6, 16, 77 if attn == "cross" else 16)
    fn = cross_attention(ctl) if attn == "cross" else self_attention(ctl)
    together = fn(q, k, v, opts([1, 0]))
    reordered = fn(torch.cat([q[3:], q[:3]]), torch.cat([k[3:], k[:3]]), torch.cat([v[3:], v[:3]]), opts([0, 1]))
    uncond_alone = fn(q[:3], k[:3], v[:3], opts([1]))
    cond_alone = fn(q[3:], k[3:], v[3:], opts([0]))
    torch.testing.assert_close(torch.cat([uncond_alone, cond_alone]), together)
    torch.testing.assert_close(torch.cat([reordered[3:], reordered[:3]]), together)


def test_fast_and_reference_controllers_agree():
    q, k, v = qkv(6, 16, 77)
    fast = cross_attention(controller(path="fast"))(q, k, v, opts([1, 0]))
    ref = cross_attention(controller(path="reference"))(q, k, v, opts([1, 0]))
    torch.testing.assert_close(fast, ref, atol=2e-5, rtol=2e-5)


def test_steps_outside_every_window_are_untouched():
    ctl = controller()
    q, k, v = qkv(6, 16, 77)
    torch.testing.assert_close(cross_attention(ctl)(q, k, v, opts([1, 0], step=9)), sdpa(q, k, v))
    q, k, v = qkv(6, 16, 16)
    torch.testing.assert_close(self_attention(ctl)(q, k, v, opts([1, 0], step=6)), sdpa(q, k, v))


def test_direct_model_calls_without_sampling_context_pass_through():
    ctl = controller()
    q, k, v = qkv(3, 16, 77)
    plain = {"n_heads": HEADS, "block": ("input", 1), "block_index": 0}
    torch.testing.assert_close(cross_attention(ctl)(q, k, v, plain), sdpa(q, k, v))


def test_wrong_batch_size_names_the_fix():
    ctl = controller()
    q, k, v = qkv(4, 16, 77)
    with pytest.raises(ValueError, match="LATENT output of 'P2P Prompts'"):
        cross_attention(ctl)(q, k, v, opts([1, 0]))


def test_maps_recorded_at_the_coarse_level_only_and_reset_between_runs():
    ctl = controller()
    q, k, v = qkv(6, 16, 77)
    cross_attention(ctl)(q, k, v, opts([1, 0], block=("input", 1)))  # level 0: not recorded
    assert ctl.store.empty
    cross_attention(ctl)(q, k, v, opts([1, 0], block=("output", 3)))
    maps = ctl.store.average()
    assert maps.shape == (3, 4, 4, 77)
    torch.testing.assert_close(maps.sum(-1), torch.ones(3, 4, 4))  # probabilities of the cond rows
    ctl.reset()
    assert ctl.store.empty


def test_local_blend_keeps_the_source_outside_the_mask():
    ctl = controller(blend=True, threshold=0.9)
    q, k, v = qkv(6, 256, 77)
    cross_attention(ctl)(q * 4, k, v, opts([1, 0], step=3, hw=(16, 16)))
    x, denoised = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    sigma = SCHEDULE[3:4]
    blended = ctl.blend(x, denoised, sigma, SCHEDULE)
    torch.testing.assert_close(blended[0], denoised[0])
    stepped = x + (x - blended) / sigma * (SCHEDULE[4] - sigma)
    source_step = x[0] + (x[0] - denoised[0]) / sigma * (SCHEDULE[4] - sigma)
    outside = (stepped[1:] - source_step).abs().amax(1) < 1e-5
    inside = (blended[1:] - denoised[1:]).abs().amax(1) < 1e-6
    assert outside.any() and (outside | inside).all()


def test_identity_edit_gives_every_item_the_source_output():
    q1, k1, v1 = qkv(1, 16, 77)
    q, k, v = (t.expand(3, -1, -1).contiguous() for t in (q1, k1, v1))
    # the reweight of 'mat' applies to the edits, so compare the un-reweighted identity
    ident = controller(kind="identity")
    ident.plan.weights.fill_(1.0)
    out = cross_attention(ident)(q, k, v, opts([0]))
    torch.testing.assert_close(out[1], out[0])
    torch.testing.assert_close(out[2], out[0])
