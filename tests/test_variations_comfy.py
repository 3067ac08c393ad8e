"""Stochastic-embedding variations and the null-text embedding VAE through ComfyUI's stock samplers."""

from __future__ import annotations

import pytest
import torch
from comfy_cli import WorkflowError, execute_prompt

from harness import comfyui, model_files, pack, tiny_models, trained_model
from harness.inversion_runs import node, rel_err

pytestmark = pytest.mark.comfy

PROMPT = "a red square on a table"
STEPS = 4


def ksample(model, positive, negative, latent, seed=0):
    with torch.inference_mode():
        return node("KSampler").sample(model, seed, STEPS, 7.5, "euler", "normal", positive, negative, latent,
                                       denoise=1.0)[0]["samples"]


def vary(model, positive, latent, mode="token noise", count=3, seed=0, scale=0.5, words="", **optional):
    return node("PromptEditStochasticEmbeddings").vary(model, positive, latent, mode, count, seed, scale, words, **optional)


def perturbed_vae(target, dim=32, tokens=77, seed=0):
    from comfyui_prompt_edit.vae_embed.checkpoint import TrainedEmbeddingVAE
    from comfyui_prompt_edit.vae_embed.model import EmbeddingVAE, EmbeddingVAEConfig

    torch.manual_seed(seed)
    vae = EmbeddingVAE(EmbeddingVAEConfig("token_mlp", tokens, dim, latent=4, hidden=16))
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return TrainedEmbeddingVAE(vae.requires_grad_(False), target)


@pytest.fixture
def setup(tiny_sd15, tiny_sd15_clip):
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return tiny_sd15, tiny_sd15_clip, comfyui.encode(tiny_sd15_clip, PROMPT), comfyui.encode(tiny_sd15_clip, ""), latent


def test_zero_noise_is_the_plain_run_and_noise_varies_items_reproducibly(setup):
    model, clip, positive, negative, latent = setup
    m0, p0, l0, _ = vary(model, positive, latent, scale=0.0)
    assert l0["samples"].shape[0] == 3 and l0["batch_index"] == [0, 0, 0]
    plain = ksample(model, [[positive[0][0].repeat(3, 1, 1), positive[0][1]]], negative,
                    {"samples": torch.zeros(3, 4, 8, 8), "batch_index": [0, 0, 0]})
    assert torch.equal(ksample(m0, p0, negative, l0), plain)
    m1, p1, l1, _ = vary(model, positive, latent, words="red", clip=clip, prompt=PROMPT)
    varied = ksample(m1, p1, negative, l1)
    assert rel_err(varied[0], varied[1]) > 1e-3 and rel_err(varied[1], varied[2]) > 1e-3
    again = ksample(*vary(model, positive, latent, words="red", clip=clip, prompt=PROMPT)[:2], negative, l1)
    torch.testing.assert_close(again, varied)
    # only the word's columns changed
    changed = (p1[0][0][1] != positive[0][0][0]).any(dim=-1).nonzero().flatten().tolist()
    assert changed == [2]  # <start> a red ...


def test_p2p_variations_leave_the_source_branch_alone(setup):
    model, clip, positive, negative, latent = setup
    p2p_positive, p2p_latent, edit = node("PromptEditP2PPrompts").build(clip, latent, PROMPT, "a blue square on a table")
    m, p, lat, expanded = vary(model, p2p_positive, p2p_latent, count=3, scale=0.8, p2p_edit=edit)
    assert expanded.batch_size == 4 and lat["samples"].shape[0] == 4
    assert torch.equal(p[0][0][0], p2p_positive[0][0][0])
    rows = (p[0][0][1] != p2p_positive[0][0][1]).any(dim=-1).nonzero().flatten().tolist()
    assert rows == [2]  # "blue" (after <start> and "a"), the word the source lacks
    controlled = node("PromptEditP2PAttentionControl").apply(m, expanded, "replace", 0.0, 0.8, 0.4, "coarse")[0]
    out = ksample(controlled, p, negative, lat)
    plain = node("PromptEditP2PAttentionControl").apply(model, edit, "replace", 0.0, 0.8, 0.4, "coarse")[0]
    reference = ksample(plain, p2p_positive, negative, p2p_latent)
    # the source of a batch of 4 is that of the batch of 2 up to float32 roundoff, which the CPU's
    # batch-size-dependent matmul kernels leave and the steps amplify in a few elements (AVX-512: 5e-4)
    source_error = rel_err(out[0], reference[0])
    print(f"\nsource of the varied batch vs the plain P2P batch: relative error {source_error:.1e}")
    assert source_error < 1e-4 and rel_err(out[1], out[2]) > 1e-3


def test_an_untrained_vae_is_the_identity_and_a_trained_one_redraws_per_step(setup):
    from comfyui_prompt_edit.vae_embed.checkpoint import TrainedEmbeddingVAE
    from comfyui_prompt_edit.vae_embed.model import EmbeddingVAE, EmbeddingVAEConfig

    model, clip, positive, negative, latent = setup
    identity = TrainedEmbeddingVAE(EmbeddingVAE(EmbeddingVAEConfig("sequence_mlp", 77, 32)).requires_grad_(False), "conditional")
    m, p, lat, _ = vary(model, positive, latent, mode="embedding VAE", embedding_vae=identity)
    plain = ksample(model, p, negative, lat)
    assert torch.equal(ksample(m, p, negative, lat), plain)

    m, p, lat, _ = vary(model, positive, latent, mode="embedding VAE", embedding_vae=perturbed_vae("null-text"))
    seen = {}

    def recorder(n, context, value, extra_options):
        chunks = extra_options["cond_or_uncond"]
        size = context.shape[0] // len(chunks)
        if 1 in chunks:
            i = chunks.index(1)
            seen.setdefault(float(extra_options["sigmas"][0]), context[i * size : (i + 1) * size].clone())
        return n, context, value

    m.set_model_attn2_patch(recorder)
    out = ksample(m, p, negative, lat)
    assert rel_err(out[0], out[1]) > 1e-3
    contexts = list(seen.values())
    assert len(contexts) == STEPS
    assert not torch.allclose(contexts[0][0], contexts[0][1])  # items differ
    assert not torch.allclose(contexts[0][0], contexts[1][0])  # redrawn per step


def test_bad_inputs_are_named(setup):
    model, clip, positive, negative, latent = setup
    with pytest.raises(ValueError, match="embedding_vae: mode 'embedding VAE' needs one"):
        vary(model, positive, latent, mode="embedding VAE")
    with pytest.raises(ValueError, match="trained for 64-channel embeddings"):
        vary(model, positive, latent, mode="embedding VAE", embedding_vae=perturbed_vae("conditional", dim=64))
    with pytest.raises(ValueError, match="words: none of"):
        vary(model, positive, latent, words="zebra", clip=clip, prompt=PROMPT)
    with pytest.raises(ValueError, match="connect its clip"):
        vary(model, positive, latent, words="red")
    two = [[torch.cat([positive[0][0]] * 2), positive[0][1]]]
    with pytest.raises(ValueError, match="holds 2 prompts"):
        vary(model, two, latent)


def test_sdxl_token_noise_keeps_the_pooled_output_batched(tiny_sdxl, tiny_sdxl_clip):
    positive, negative = comfyui.encode(tiny_sdxl_clip, PROMPT), comfyui.encode(tiny_sdxl_clip, "")
    m, p, lat, _ = vary(tiny_sdxl, positive, {"samples": torch.zeros(1, 4, 8, 8)}, count=2)
    assert p[0][1]["pooled_output"].shape[0] == 2
    out = ksample(m, p, negative, lat)
    assert torch.isfinite(out).all() and rel_err(out[0], out[1]) > 1e-4


def test_null_text_vae_training_lowers_the_loss_and_round_trips(trained_sd15, tmp_path, monkeypatch):
    import folder_paths
    from comfyui_prompt_edit.vae_embed.checkpoint import TrainedEmbeddingVAE

    model, clip = trained_sd15
    latents, captions = trained_model.trained_dataset(clip)
    positive, negative = comfyui.encode(clip, captions[0]), comfyui.encode(clip, "")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "embedding_vae", ([str(tmp_path)], {".safetensors"}))
    losses = []
    import comfyui_prompt_edit.nodes.embedding_vae as module

    original = module.train_null_text_vae

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        losses.extend(result)
        return result

    monkeypatch.setattr(module, "train_null_text_vae", spy)
    with torch.inference_mode():
        output = node("PromptEditTrainEmbeddingVAE").train(
            model, positive, negative, "sequence_mlp", "ddim_uniform", 10, 7.5, 60, 3e-3, 1e-4, 0, "red square",
            latent={"samples": latents[:2]})
    (trained,) = output["result"]
    assert output["ui"]["text"][0].startswith("loss ")
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    print(f"null-text VAE loss {first:.4g} -> {last:.4g}")
    assert last < 0.7 * first
    (loaded,) = node("PromptEditLoadEmbeddingVAE").load("red square.safetensors")
    ours = trained.vae.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in loaded.vae.state_dict().items())
    assert loaded.target == "null-text" and isinstance(loaded, TrainedEmbeddingVAE)


def test_conditional_vae_trains_in_graph_and_varies_the_edit(trained_sd15, tiny_vae):
    model, clip = trained_sd15
    clip_vision = tiny_models.tiny_clip_vision()
    negative = comfyui.encode(clip, "")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    with torch.inference_mode():
        output = node("PromptEditTrainConditionalEmbeddingVAE").train(
            model, clip, tiny_vae, clip_vision, "a blue circle", negative, latent, "token_mlp", "ddim_uniform", 6, 7.5,
            12, 3e-3, 1e-4, 0, "", 2, 0.5, -0.1)
    (trained,) = output["result"]
    assert trained.target == "conditional" and trained.steps_trained == 12
    assert any(p.abs().sum() > 0 for p in trained.vae._last_layer().parameters())  # it learnt something
    positive = comfyui.encode(clip, "a blue circle")
    m, p, lat, _ = vary(model, positive, latent, mode="embedding VAE", count=2, embedding_vae=trained)
    out = ksample(m, p, negative, lat)
    assert torch.isfinite(out).all() and rel_err(out[0], out[1]) > 1e-5


def test_conditional_vae_training_refuses_a_positive_diversity_weight(trained_sd15, tiny_vae):
    model, clip = trained_sd15
    with pytest.raises(ValueError, match="γ ≤ 0"), torch.inference_mode():
        node("PromptEditTrainConditionalEmbeddingVAE").train(
            model, clip, tiny_vae, tiny_models.tiny_clip_vision(), "a blue circle", comfyui.encode(clip, ""),
            {"samples": torch.zeros(1, 4, 8, 8)}, "token_mlp", "ddim_uniform", 6, 7.5, 2, 3e-3, 1e-4, 0, "", 2, 0.5, 0.5)


def test_command_line_training_writes_a_loadable_vae(sd15_checkpoint, tmp_path):
    import subprocess
    import sys

    import numpy as np
    from comfyui_prompt_edit.vae_embed.checkpoint import TrainedEmbeddingVAE
    from PIL import Image

    for i in range(2):
        pixels = np.full((64, 64, 3), 40 + 100 * i, dtype=np.uint8)
        pixels[16:40, 20:44] = (200, 60, 30)
        Image.fromarray(pixels).save(tmp_path / f"photo{i}.png")
    checkpoint = model_files.sd15_checkpoint_path()
    out = tmp_path / "cli.safetensors"
    root, _ = comfyui.find_comfyui()
    result = subprocess.run(
        [sys.executable, str(pack.ROOT / "scripts" / "train_embedding_vae.py"), "--checkpoint", str(checkpoint),
         "--images", str(tmp_path), "--prompt", "a red square", "--out", str(out), "--steps", "3", "--iterations", "4",
         "--cpu", "--comfyui", str(root)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote" in result.stdout
    loaded = TrainedEmbeddingVAE.load(out)
    assert loaded.target == "null-text" and loaded.steps_trained == 4 and loaded.vae.config.dim == 768

    bad = subprocess.run([sys.executable, str(pack.ROOT / "scripts" / "train_embedding_vae.py"), "--checkpoint",
                          str(checkpoint), "--images", str(tmp_path / "nothing"), "--prompt", "x",
                          "--out", str(tmp_path / "other.safetensors"), "--comfyui", str(root)],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "--images: no file" in bad.stderr


def test_cancelled_training_stops_at_once_and_keeps_what_it_learnt(trained_sd15, tmp_path, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils
    import folder_paths
    from comfyui_prompt_edit.vae_embed.checkpoint import TrainedEmbeddingVAE

    model, clip = trained_sd15
    latents, captions = trained_model.trained_dataset(clip)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "embedding_vae", ([str(tmp_path)], {".safetensors"}))
    shown = []
    update_absolute = comfy.utils.ProgressBar.update_absolute

    def cancel_after_the_fifth_iteration(bar, value, total=None, preview=None):
        update_absolute(bar, value, total, preview)
        if bar.total == 1000:  # the training bar, not the DDIM inversion's
            shown.append(value)
            if value == 5:  # as the Cancel button does: set the flag, and the host raises at its next check
                mm.interrupt_current_processing(True)

    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", cancel_after_the_fifth_iteration)
    try:
        with pytest.raises(mm.InterruptProcessingException), torch.inference_mode():
            node("PromptEditTrainEmbeddingVAE").train(
                model, comfyui.encode(clip, captions[0]), comfyui.encode(clip, ""), "token_mlp", "ddim_uniform", 3, 7.5,
                1000, 1e-3, 1e-4, 0, "partial", latent={"samples": latents[:1]})
    finally:
        mm.interrupt_current_processing(False)
    assert shown == [1, 2, 3, 4, 5]  # no iteration finished after the cancel (ComfyUI >= 0.3.65 stops inside the UNet)
    saved = TrainedEmbeddingVAE.load(tmp_path / "partial.safetensors")
    assert saved.steps_trained == 5


@pytest.mark.parametrize("class_type,widget,advice", [
    ("PromptEditLoadEmbeddingVAE", "vae_name", "variations_train_null_text_vae.json"),
    ("PromptEditLoadInversion", "name", "'Save Inversion'"),
])
def test_a_loader_whose_file_is_missing_says_which_workflow_makes_it(comfy_nodes, class_type, widget, advice):
    prompt = {"1": {"class_type": class_type, "inputs": {widget: "not_made_yet.safetensors"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}  # an output, so that "1" is validated
    with pytest.raises(WorkflowError, match=rf"'not_made_yet.safetensors' is not there \(models/.*\); .*{advice}"):
        execute_prompt(prompt)


def test_sd1_text_features_ignore_the_projection_comfyui_leaves_uninitialised(tiny_sd15_clip):
    from comfyui_prompt_edit.vae_embed.comfy_training import embedding_text_features

    weight = tiny_sd15_clip.cond_stage_model.clip_l.transformer.text_projection.weight
    kept = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.fill_(float("nan"))  # what uninitialised memory may hold
        features, conditioning = embedding_text_features(tiny_sd15_clip, "a photo of a dog")
        assert torch.isfinite(features(conditioning[0][0])).all()
    finally:
        with torch.no_grad():
            weight.copy_(kept)
