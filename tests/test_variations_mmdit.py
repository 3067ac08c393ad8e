"""Stochastic Embeddings on Flux and SD3 (tiny random-weight models and T5 text encoders): token
noise on whole prompts, on named words and on the words an edit adds, P2P batches kept P2P
batches, and the refused embedding-VAE mode."""

from __future__ import annotations

import pytest
import torch

from harness import mmdit_models

pytestmark = pytest.mark.comfy

FAMILIES = {"flux": (mmdit_models.tiny_flux_model, mmdit_models.tiny_flux_clip),
            "sd3": (lambda: mmdit_models.tiny_sd3_model(context_dim=mmdit_models.SD3_CONTEXT_DIM,
                                                    pooled_dim=mmdit_models.SD3_TINY_POOLED_DIM),
                    mmdit_models.tiny_sd3_clip)}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def model_and_clip(request):
    build_model, build_clip = FAMILIES[request.param]
    return build_model(), build_clip()


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[f"PromptEdit{name}"]()


def latent() -> dict:
    return {"samples": torch.zeros(1, mmdit_models.MMDIT_LATENT_CHANNELS, 16, 16)}


def vary(model, positive, scale=0.3, words="", p2p_edit=None, mode="token noise", count=3):
    return node("StochasticEmbeddings").vary(model, positive, latent(), mode, count, 0, scale, words, p2p_edit)


def test_token_noise_varies_each_prompt_and_scale_0_keeps_it(model_and_clip):
    from harness import comfyui

    model, clip = model_and_clip
    positive = comfyui.encode(clip, "a photo of a cat on a mat")
    _, varied, batch, _ = vary(model, positive)
    cond = varied[0][0]
    assert cond.shape[0] == 3 == batch["samples"].shape[0]
    original = positive[0][0][0]
    for i in range(3):
        change = (cond[i] - original).norm() / original.norm()
        assert 0.05 < change < 1.0, change  # about the scale, relative to each token's norm
    assert not torch.equal(cond[0], cond[1])
    _, same, _, _ = vary(model, positive, scale=0.0)
    assert torch.equal(same[0][0], original.expand_as(same[0][0]))


def test_a_p2p_batch_stays_a_p2p_batch_with_its_source_untouched(model_and_clip):
    model, clip = model_and_clip
    positive, _, edit = node("P2PPrompts").build(clip, latent(), "a photo of a cat on a mat", "a photo of a dog on a mat")
    _, varied, batch, varied_edit = vary(model, positive, p2p_edit=edit, count=2)
    cond = varied[0][0]
    assert cond.shape[0] == 3 == varied_edit.batch_size == batch["samples"].shape[0]
    assert torch.equal(cond[0], positive[0][0][0])  # the source
    assert not torch.equal(cond[1], cond[2]) and not torch.equal(cond[1], positive[0][0][1])
    from comfyui_prompt_edit.attention.edit_spec import T5_ENCODER

    assert varied_edit.encoder == T5_ENCODER
    # P2P Attention Control takes the varied edit as it took the original one
    node("P2PAttentionControl").apply(model, varied_edit, "replace", 0.0, 0.8, 0.4, "coarse")


def test_token_noise_on_named_words_changes_only_their_columns(model_and_clip):
    from harness import comfyui

    model, clip = model_and_clip
    prompt = "a photo of a cat on a mat"
    positive = comfyui.encode(clip, prompt)
    _, varied, _, _ = node("StochasticEmbeddings").vary(model, positive, latent(), "token noise", 2, 0, 0.3, "cat",
                                                         None, None, clip, prompt)
    changed = (varied[0][0] != positive[0][0]).any(dim=-1)  # [item, column]
    columns = changed[0].nonzero().flatten().tolist()
    assert columns and changed[0].sum() < 5, columns  # the word's piece(s), in each encoder part
    if type(model.model).__name__ == "SD3":  # its context: CLIP-L||G's 77 columns, then T5's
        assert min(columns) < 77 <= max(columns), f"{columns}: the word in one encoder part only"
    assert torch.equal(changed[0], changed[1])


def test_a_p2p_batch_varies_the_words_the_source_lacks(model_and_clip):
    model, clip = model_and_clip
    positive, _, edit = node("P2PPrompts").build(clip, latent(), "a photo of a cat on a mat", "a photo of a dog on a mat")
    _, varied, _, _ = vary(model, positive, p2p_edit=edit, count=2)
    changed = (varied[0][0] != positive[0][0][[0, 1, 1]]).any(dim=-1)
    assert not changed[0].any()  # the source
    assert 0 < changed[1].sum() < 5 and torch.equal(changed[1], changed[2])  # "dog" only


def test_the_embedding_vae_mode_is_refused_naming_the_input(model_and_clip):
    from harness import comfyui

    model, clip = model_and_clip
    with pytest.raises(ValueError, match="mode: 'embedding VAE' swaps the context through a UNet's cross-attention patches"):
        vary(model, comfyui.encode(clip, "a photo of a cat on a mat"), mode="embedding VAE")
