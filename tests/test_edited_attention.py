"""The fast (values + fused kernel) path equals the reference (materialised maps) path."""

import pytest
import torch

from comfyui_prompt_edit.attention.cross_step import CrossStep
from comfyui_prompt_edit.attention.edit_plan import align_plan
from comfyui_prompt_edit.attention.edit_spec import ControlSettings, P2PEdit, Reweight
from comfyui_prompt_edit.attention.step_window import Window
from comfyui_prompt_edit.attention.edited_attention import (
    fast_cross_batch,
    fast_self_batch,
    reference_cross_attention,
    reference_self_attention,
)
from comfyui_prompt_edit.attention.local_blend import blend_denoised, blend_mask

from synthetic import HEADS, make_prompt, qkv, sdpa


def fast_cross_attention(q, k, v, step: CrossStep, attention):
    """The fast path of one conditional chunk on its own (the controller fuses several chunks)."""
    return fast_cross_batch(q, k, v, step).run(attention)


def fast_self_attention(q, k, v, attention):
    return fast_self_batch(q, k, v).run(attention)


def plan_step(kind, step=0, num_steps=10, reweight=None, word_windows=()):
    source = make_prompt("a cat riding a bike")
    if kind == "replace":
        targets = [make_prompt("a ted|dy bear riding a bike"),
                   make_prompt("a dog riding a bike")]
    elif kind == "refine":
        targets = [make_prompt("a fluffy cat riding a red bike"),
                   make_prompt("a cat riding a bike at night")]
    else:
        targets = [make_prompt("a cat riding a bike")]
    edit = P2PEdit(source, tuple(targets))
    if reweight:
        edit = edit.with_reweight(Reweight(reweight[0], reweight[1]))
    settings = ControlSettings(kind=kind, cross_window=Window(0.0, 0.5), word_windows=word_windows)
    return align_plan(edit, settings).cross_step(step, num_steps), edit.batch_size


CASES = [
    ("replace", 0, None, ()),
    ("replace", 0, (("bike",), 2.5), ()),
    ("replace", 0, None, ((("bear",), Window(0.0, 0.1)),)),  # mixed coefficients at one step
    ("replace", 7, None, ()),  # outside the window: pass-through
    ("refine", 0, None, ()),
    ("refine", 2, (("bike",), -1.5), ()),
    ("reweight", 0, (("cat",), 3.0), ()),
]


@pytest.mark.parametrize("kind,step,reweight,windows", CASES)
def test_fast_cross_attention_matches_reference_fp32(kind, step, reweight, windows):
    cs, batch = plan_step(kind, step, reweight=reweight, word_windows=windows)
    q, k, v = qkv(batch, 16, 77)
    fast = fast_cross_attention(q, k, v, cs, sdpa)
    ref = reference_cross_attention(q, k, v, HEADS, cs)
    torch.testing.assert_close(fast, ref, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("kind,step,reweight,windows", CASES)
def test_fast_cross_attention_matches_reference_fp16(kind, step, reweight, windows):
    cs, batch = plan_step(kind, step, reweight=reweight, word_windows=windows)
    q, k, v = qkv(batch, 16, 77, torch.float16)
    fast = fast_cross_attention(q, k, v, cs.to(q.device, q.dtype), sdpa)
    ref = reference_cross_attention(q.float(), k.float(), v.float(), HEADS, cs)
    assert fast.dtype == torch.float16
    torch.testing.assert_close(fast.float(), ref, atol=1e-2, rtol=1e-2)


def test_tiled_keys_give_the_same_edit():
    """ComfyUI may repeat a 77-column conditioning to 154 columns; the edit must not change."""
    cs, batch = plan_step("replace", reweight=(("bike",), 2.0))
    q, k, v = qkv(batch, 16, 77)
    tiled = lambda t: torch.cat([t, t], dim=1)  # noqa: E731
    torch.testing.assert_close(fast_cross_attention(q, tiled(k), tiled(v), cs, sdpa), fast_cross_attention(q, k, v, cs, sdpa), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reference_cross_attention(q, tiled(k), tiled(v), HEADS, cs), reference_cross_attention(q, k, v, HEADS, cs), atol=1e-5, rtol=1e-5)


def test_source_row_is_never_edited():
    cs, batch = plan_step("replace", reweight=(("bike",), 4.0))
    q, k, v = qkv(batch, 16, 77)
    torch.testing.assert_close(fast_cross_attention(q, k, v, cs, sdpa)[0], sdpa(q[:1], k[:1], v[:1])[0])


def test_identity_mapper_with_unit_coefficients_copies_the_source_attention():
    n, edits = 77, 2
    cs = CrossStep(torch.eye(n).expand(edits, n, n), torch.ones(edits, n), torch.zeros(edits, n), True, False, False)
    q, k, v = qkv(1 + edits, 16, n)
    expected = sdpa(q[:1].expand(edits, -1, -1), k[:1].expand(edits, -1, -1), v[1:])
    torch.testing.assert_close(fast_cross_attention(q, k, v, cs, sdpa)[1:], expected)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float16, 1e-2)])
def test_self_attention_injection_fast_matches_reference(dtype, tol):
    q, k, v = qkv(3, 64, 64, dtype)
    fast = fast_self_attention(q, k, v, sdpa)
    ref = reference_self_attention(q.float(), k.float(), v.float(), HEADS)
    torch.testing.assert_close(fast.float(), ref, atol=tol, rtol=tol)
    torch.testing.assert_close(fast[0].float(), sdpa(q[:1], k[:1], v[:1])[0].float(), atol=tol, rtol=tol)


def euler_step(x, denoised, sigma, sigma_next):
    return x + (x - denoised) / sigma * (sigma_next - sigma)


@pytest.mark.parametrize("sigma_next", [0.0, 0.7])
def test_blended_denoised_gives_prompt_to_prompt_latent_blend_after_an_euler_step(sigma_next):
    """Prompt-to-Prompt blends latents after the step; blending D must give the same latents."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 8, 8, generator=g)
    denoised = torch.randn(3, 4, 8, 8, generator=g)
    mask = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    sigma = 1.3
    stepped = euler_step(x, denoised, sigma, sigma_next)
    expected = torch.cat([stepped[:1], stepped[:1] + mask * (stepped[1:] - stepped[:1])])
    got = euler_step(x, blend_denoised(x, denoised, mask, sigma, sigma_next), sigma, sigma_next)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_blend_mask_is_union_of_source_and_edit_regions():
    maps = torch.zeros(2, 4, 4, 3)
    maps[0, 0, 0, 1] = 1.0  # source word (column 1) attends top-left
    maps[1, 3, 3, 2] = 1.0  # edited word (column 2) attends bottom-right
    selectors = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mask = blend_mask(maps, selectors, (8, 8), threshold=0.3)
    assert mask.shape == (1, 1, 8, 8)
    assert mask[0, 0, 0, 0] == 1 and mask[0, 0, 7, 7] == 1  # both regions
    assert mask[0, 0, 0, 7] == 0 and mask[0, 0, 7, 0] == 0  # elsewhere untouched


def test_column_probs_are_the_head_averaged_maps_at_those_columns_tiled_keys_included():
    """The bounded maps (one head at a time, the wanted columns only: Wan's) are the full maps' numbers."""
    from comfyui_prompt_edit.attention.edited_attention import attention_probs, column_probs, folded_probs

    generator = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 24, 4 * 8, generator=generator), torch.randn(2, 2 * 16, 4 * 8, generator=generator)
    columns = (0, 3, 4, 15)
    full = folded_probs(attention_probs(q, k, 4), 16).mean(1)  # [B, Nq, 16]: two key tiles summed
    kept = column_probs(q, k, 4, 16, columns)
    assert kept.shape == (2, 24, 4)
    torch.testing.assert_close(kept, full[..., list(columns)], atol=1e-6, rtol=1e-5)
    assert float((kept - full[..., :4]).abs().max()) > 1e-3  # column order matters: the test can fail
