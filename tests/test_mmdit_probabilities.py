"""Prompt-to-Prompt on the image→text probabilities of Flux's and SD3's joint attention
(attention/mmdit_probabilities.py): the maths on random tensors, then through ComfyUI's sampling
with the tiny models and their tiny T5 text encoders (tests/harness/mmdit_models.py)."""

from __future__ import annotations

import pytest
import torch

from harness.edit_checks import MIN_EDIT_CHANGE, assert_edit_moves, assert_same, relative_change

from comfyui_prompt_edit.attention import mmdit_probabilities
from comfyui_prompt_edit.attention.cross_step import CrossStep
from comfyui_prompt_edit.attention.mmdit_probabilities import ProbabilitiesOverride, edited_image_rows

T, N, H, D = 3, 5, 2, 4


def step_of(mapper: torch.Tensor, c_src: torch.Tensor, c_own: torch.Tensor) -> CrossStep:
    return CrossStep(mapper, c_src, c_own, bool(c_src.any()), bool(c_own.any()), False)


def attention(q, k, v):
    return (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1) @ v


def qkv(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, H, T + N, D, generator=g) for _ in range(3)]


def test_an_edit_keeping_its_own_attention_is_the_plain_attention_in_any_row_chunks():
    q, k, v = qkv()
    own = step_of(torch.eye(T)[None], torch.zeros(1, T), torch.ones(1, T))
    for chunk in (1, 2, None):
        out = edited_image_rows(q, k, v, T, slice(0, 2), own, row_chunk=chunk)
        torch.testing.assert_close(out[0], attention(q[1], k[1], v[1])[:, T:])


def test_the_image_to_text_block_is_the_mapped_source_block_and_the_rest_is_the_edits():
    q, k, v = qkv()
    mapper = torch.tensor([[0.0, 1, 0], [0.5, 0, 0.5], [0, 0, 1]])
    weights = torch.tensor([1.0, 2.0, 1.0])
    out = edited_image_rows(q, k, v, T, slice(0, 2), step_of(mapper[None], weights[None], torch.zeros(1, T)), 2)
    p_source = (q[0] @ k[0].transpose(-1, -2) * D ** -0.5).softmax(-1)[:, T:]
    p_edit = (q[1] @ k[1].transpose(-1, -2) * D ** -0.5).softmax(-1)[:, T:]
    block = p_source[..., :T] @ mapper * weights
    expected = block @ v[1, :, :T] + p_edit[..., T:] @ v[1, :, T:]
    torch.testing.assert_close(out[0], expected)


@pytest.mark.parametrize("layout", ["flux", "sd3"])
def test_the_override_replaces_only_the_edited_items_image_rows(layout):
    q, k, v = qkv(batch=3)
    step = step_of(torch.eye(T)[None].expand(2, T, T), torch.ones(2, T), torch.zeros(2, T))

    def host(q, k, v, heads, skip_reshape=False, transformer_options=None):
        if not skip_reshape:
            q, k, v = (x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2) for x in (q, k, v))
        return attention(q, k, v).transpose(1, 2).flatten(2)

    override = ProbabilitiesOverride(lambda opts, rows: [(slice(0, 3), True)], step, T, T + N, None)
    if layout == "flux":  # [B, H, L, D], after RoPE
        args, kwargs = (q, k, v, H), {"skip_reshape": True}
    else:  # [B, L, H·D]
        args, kwargs = tuple(x.transpose(1, 2).flatten(2) for x in (q, k, v)) + (H,), {}
    out = override(host, *args, transformer_options={}, **kwargs)
    plain = host(*args, **kwargs)
    assert torch.equal(out[0], plain[0]) and torch.equal(out[1:, :T], plain[1:, :T])
    for item in (1, 2):
        expected = edited_image_rows(q, k, v, T, slice(0, 3), step)[item - 1]
        torch.testing.assert_close(out[item, T:], expected.transpose(0, 1).flatten(1))
        assert not torch.allclose(out[item, T:], plain[item, T:])
    image_only = torch.randn(3, N, H * D)  # SD3.5's attn2 is left to the host
    assert torch.equal(override(host, image_only, image_only, image_only, H), host(image_only, image_only, image_only, H))


# -- through ComfyUI's sampling ----------------------------------------------------------------------

STEPS, SEED, LATENT = 6, 7, 16


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[f"PromptEdit{name}"]()


def latent(batch: int) -> dict:
    from harness import mmdit_models

    return {"samples": torch.zeros(batch, mmdit_models.MMDIT_LATENT_CHANNELS, LATENT, LATENT), "batch_index": [0] * batch}


def sample(model, positive, latent_image, negative):
    import comfy.sample

    samples = latent_image["samples"]
    noise = comfy.sample.prepare_noise(samples, SEED, latent_image.get("batch_index"))
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, STEPS, 2.0, "euler", "simple", positive, negative, samples,
                                   seed=SEED, disable_pbar=True)


def control(model, edit, kind="replace", end=0.8):
    return node("P2PAttentionControl").apply(model, edit, kind, 0.0, end, 0.4, "coarse", mmdit_mechanism="probabilities")




def assert_exact(actual, expected):
    """Equal to the float32 rounding of one product ``p @ mapper`` (rtol 1e-5; atol 1e-9 for the
    probabilities that are all but 0). The tiny models attend sharply (q/k norm weights 3): the
    source's and the edit's image→text probabilities differ by up to 0.96, so a block taken from
    the wrong item or the wrong columns fails by orders of magnitude."""
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-9)


class Recorder:
    """Wraps edited_probabilities and keeps its inputs and outputs."""

    def __init__(self, function):
        self.function, self.calls = function, []

    def __call__(self, p_source, p_edit, text_length, mapper, c_src, c_own):
        out = self.function(p_source, p_edit, text_length, mapper, c_src, c_own)
        self.calls.append((p_source, p_edit, text_length, mapper, c_src, c_own, out))
        return out


@pytest.mark.comfy
@pytest.mark.parametrize("which", ["flux", "sd3"])
def test_equal_prompts_sample_the_plain_image_and_an_edit_keeps_the_source(which, mmdit_families):
    from harness import comfyui

    model, clip = mmdit_families[which]
    negative = comfyui.encode(clip, "")
    prompt = "a photo of a cat riding a bicycle"
    positive, batch, edit = node("P2PPrompts").build(clip, latent(1), prompt, f"{prompt}\na photo of a dog riding a bicycle")
    edited = sample(control(model, edit)[0], positive, batch, negative)
    plain = sample(model, positive, batch, negative)
    assert_same(edited[0], plain[0])
    assert_same(edited[1], plain[0])  # the same prompt: the source's attention is its own
    # the edit samples with the source's image→text attention: it moves the edited item by about 1e-1
    assert_edit_moves(edited[[0, 2]], plain[[0, 2]])


def family_model(family: str, mmdit_families) -> tuple:
    """(model, clip) of a tiny MMDiT family: Flux-dev / SD3 as the fixture has them, Flux-schnell and
    SD3.5 (MMDiT-X) built for the same text encoders."""
    from harness import mmdit_models

    if family in ("flux-dev", "sd3"):
        return mmdit_families[family.split("-")[0]]
    if family == "flux-schnell":
        return mmdit_models.tiny_flux_model(schnell=True), mmdit_families["flux"][1]
    return (mmdit_models.tiny_sd3_model(context_dim=mmdit_models.SD3_CONTEXT_DIM, pooled_dim=mmdit_models.SD3_TINY_POOLED_DIM,
                                        x_block_self_attn_layers=(0,)), mmdit_families["sd3"][1])


@pytest.mark.comfy
@pytest.mark.parametrize("family", ["flux-dev", "flux-schnell", "sd3", "sd3.5"])
def test_the_edit_moves_the_edited_item_well_over_roundoff_and_keeps_the_source(family, mmdit_families):
    from harness import comfyui

    model, clip = family_model(family, mmdit_families)
    positive, batch, edit = node("P2PPrompts").build(clip, latent(1), "a photo of a cat riding a bicycle",
                                                     "a photo of a dog riding a bicycle")
    negative = comfyui.encode(clip, "")
    edited = sample(control(model, edit)[0], positive, batch, negative)
    # measured: 9e-2 (flux-schnell) … 2.2e-1 (sd3.5) relative; the source is bit-exact plain sampling
    assert_edit_moves(edited, sample(model, positive, batch, negative))


@pytest.mark.comfy
@pytest.mark.parametrize("which", ["flux", "sd3"])
@pytest.mark.parametrize("kind", ["replace", "refine"])
def test_the_edited_image_to_text_block_is_the_mapped_source_block(which, kind, mmdit_families, monkeypatch):
    from harness import comfyui

    from comfyui_prompt_edit.attention.seq_aligner import index_to_matrix, refinement_alignment, replacement_mapper

    model, clip = mmdit_families[which]
    source, target = ("a photo of a cat", "a photo of a dog") if kind == "replace" else ("a photo of a cat", "a photo of a fat cat")
    positive, batch, edit = node("P2PPrompts").build(clip, latent(1), source, target)
    recorder = Recorder(mmdit_probabilities.edited_probabilities)
    monkeypatch.setattr(mmdit_probabilities, "edited_probabilities", recorder)
    sample(control(model, edit, kind, end=0.5)[0], positive, batch, comfyui.encode(clip, ""))
    if kind == "replace":
        mapper = replacement_mapper(edit.source, edit.targets[0])
    else:
        mapper = index_to_matrix(*refinement_alignment(edit.source, edit.targets[0]), edit.num_columns)
    assert recorder.calls and all(call[2] == edit.num_columns for call in recorder.calls)
    for p_source, p_edit, columns, used_mapper, c_src, c_own, out in recorder.calls:
        assert torch.equal(used_mapper, mapper)
        block = out[..., :columns]
        if kind == "replace":
            assert_exact(block, p_source[..., :columns] @ mapper)
        else:  # aligned columns from the source, the added word's its own
            _, alpha = refinement_alignment(edit.source, edit.targets[0])
            assert_exact(block, p_source[..., :columns] @ mapper * alpha + p_edit[..., :columns] * (1 - alpha))
            assert (alpha == 0).sum() >= 1
        assert torch.equal(out[..., columns:], p_edit[..., columns:])  # image→image is the edit's own


@pytest.mark.comfy
@pytest.mark.parametrize("which", ["flux", "sd3"])
def test_reweight_scales_the_words_image_to_text_block(which, mmdit_families, monkeypatch):
    from harness import comfyui

    model, clip = mmdit_families[which]
    prompt = "a photo of a cat"
    positive, batch, edit = node("P2PPrompts").build(clip, latent(1), prompt, prompt)
    (edit,) = node("P2PReweight").reweight(edit, clip, "cat", 3.0)
    cat = [c for hit in edit.targets[0].find(("cat",)) for c in hit]
    assert len(cat) == (1 if which == "flux" else 2)  # SD3: its CLIP column and its T5 column
    recorder = Recorder(mmdit_probabilities.edited_probabilities)
    monkeypatch.setattr(mmdit_probabilities, "edited_probabilities", recorder)
    edited = sample(control(model, edit, "reweight")[0], positive, batch, comfyui.encode(clip, ""))
    assert recorder.calls
    weights = torch.ones(edit.num_columns)
    weights[cat] = 3.0
    for p_source, p_edit, columns, _, c_src, c_own, out in recorder.calls:
        assert_exact(out[..., :columns], p_source[..., :columns] * weights)
    assert relative_change(edited[1], edited[0]) > MIN_EDIT_CHANGE  # the reweighted prompt draws another image
