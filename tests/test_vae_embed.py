"""The embedding VAE, its losses, checkpoints, token noise and null-text VAE training (no ComfyUI)."""

import math

import pytest
import torch
from comfyui_prompt_edit.inversion.ddim import ddim_invert
from comfyui_prompt_edit.vae_embed.checkpoint import (
    EmbeddingVAEFileError,
    TrainedEmbeddingVAE,
)
from comfyui_prompt_edit.vae_embed.losses import (
    cross_matched_clip_loss,
    cyclical_beta,
    derangement,
    diversity_loss,
)
from comfyui_prompt_edit.vae_embed.model import (
    ARCHITECTURES,
    EmbeddingVAE,
    EmbeddingVAEConfig,
    kl_divergence,
)
from comfyui_prompt_edit.vae_embed.sampling import VAEDraws, item_noise, token_noise
from comfyui_prompt_edit.vae_embed.training import (
    NullTextVAESettings,
    Trajectory,
    train_null_text_vae,
)

TOKENS, DIM = 6, 16


def make_vae(architecture: str, trained: bool = False, seed: int = 0) -> EmbeddingVAE:
    torch.manual_seed(seed)
    vae = EmbeddingVAE(EmbeddingVAEConfig(architecture, TOKENS, DIM, latent=4, hidden=16, reduced=2, layers=1, heads=2))
    if trained:  # a decoder that is not the zero-initialised identity
        with torch.no_grad():
            for p in vae.parameters():
                p.add_(0.2 * torch.randn_like(p))
    return vae.eval()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_an_untrained_vae_returns_its_input_and_shapes_hold(architecture):
    vae = make_vae(architecture)
    x = torch.randn(3, TOKENS, DIM)
    noise = torch.randn(vae.latent_shape(3))
    out, mean, log_variance = vae(x, torch.tensor([500.0]), noise)
    assert torch.equal(out, x)
    assert mean.shape == log_variance.shape == noise.shape


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_temperature_zero_is_deterministic_and_the_timestep_matters(architecture):
    vae = make_vae(architecture, trained=True)
    x = torch.randn(1, TOKENS, DIM).expand(2, -1, -1)
    noise = torch.randn(vae.latent_shape(2))
    at_mean, _, _ = vae(x, torch.tensor([100.0]), noise, temperature=0.0)
    torch.testing.assert_close(at_mean[0], at_mean[1])
    varied, _, _ = vae(x, torch.tensor([100.0]), noise)
    assert not torch.allclose(varied[0], varied[1])
    later, _, _ = vae(x, torch.tensor([900.0]), noise)
    assert not torch.allclose(varied, later)


def test_the_embedding_shape_is_checked():
    with pytest.raises(ValueError, match=r"embeddings \[batch, 6, 16\], got \[1, 77, 16\]"):
        make_vae("sequence_mlp").encode(torch.zeros(1, 77, 16), torch.tensor([1.0]))


def test_kl_is_exact():
    mean, log_variance = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, (0.5 * log_variance).exp()), torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(kl_divergence(mean, log_variance), reference.flatten(1).sum(1).mean())
    assert float(kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3))) == 0.0


def test_cyclical_beta_ramps_within_each_cycle():
    values = [cyclical_beta(s, 100, cycles=4, ramp=0.5) for s in range(100)]
    assert values[0] == 0.0 and values[25] == 0.0 and values[50] == 0.0
    assert values[6] == pytest.approx(0.48) and values[12] == pytest.approx(0.96) and values[13:25] == [1.0] * 12


def test_derangement_has_no_fixed_point_and_is_a_permutation():
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 7):
        for _ in range(20):
            p = derangement(n, g)
            assert sorted(p.tolist()) == list(range(n)) and not (p == torch.arange(n)).any()
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)


def test_diversity_and_clip_losses_against_hand_values():
    same = torch.ones(3, 4)
    assert float(diversity_loss(same)) == 0.0
    two = torch.tensor([[0.0, 0.0], [1.0, 3.0]])  # the only derangement swaps them: mean |Δ| = 2
    assert float(diversity_loss(two)) == pytest.approx(2.0)
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # λ·D(I'', C') + (1−λ)·D(I', C''): D = 0 for equal directions, 1 for orthogonal ones
    assert float(cross_matched_clip_loss(a, a, a, b, 0.25)) == pytest.approx(0.75)
    assert float(cross_matched_clip_loss(a, b, a, a, 0.25)) == pytest.approx(0.25)


def test_save_load_round_trip_is_exact(tmp_path):
    trained = TrainedEmbeddingVAE(make_vae("transformer", trained=True), "null-text", "abc", 12)
    trained.save(tmp_path / "v.safetensors")
    back = TrainedEmbeddingVAE.load(tmp_path / "v.safetensors")
    assert (back.target, back.model_fingerprint, back.steps_trained) == ("null-text", "abc", 12)
    assert back.vae.config == trained.vae.config
    ours = trained.vae.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in back.vae.state_dict().items()) and len(ours) == len(back.vae.state_dict())
    x, noise = torch.randn(2, TOKENS, DIM), torch.randn(trained.vae.latent_shape(2))
    with torch.no_grad():
        assert torch.equal(back.vae(x, torch.tensor([3.0]), noise)[0], trained.vae(x, torch.tensor([3.0]), noise)[0])
    assert not list(tmp_path.glob(".*partial"))


def test_corrupt_or_mismatched_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(EmbeddingVAEFileError, match="not a readable safetensors file"):
        TrainedEmbeddingVAE.load(bad)
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    TrainedEmbeddingVAE(make_vae("token_mlp"), "conditional").save(tmp_path / "v.safetensors")
    with safe_open(str(tmp_path / "v.safetensors"), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(tmp_path / "v.safetensors"))
    name = next(iter(tensors))
    tensors[name] = torch.zeros(3, 3)
    save_file(tensors, str(tmp_path / "wrong.safetensors"), metadata=meta)
    with pytest.raises(EmbeddingVAEFileError, match=f"wrong shape: \\['{name}'\\]"):
        TrainedEmbeddingVAE.load(tmp_path / "wrong.safetensors")
    save_file(tensors, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(EmbeddingVAEFileError, match="not an embedding VAE saved by this pack"):
        TrainedEmbeddingVAE.load(tmp_path / "foreign.safetensors")


def test_token_noise_touches_only_the_chosen_tokens_at_the_asked_scale():
    embedding = torch.randn(TOKENS, DIM) * 3
    original = embedding.clone()
    noise = item_noise((TOKENS, DIM), seed=1, item=0)
    assert torch.equal(token_noise(embedding, [2, 3], 0.0, noise), embedding)
    out = token_noise(embedding, [2, 3], 0.5, noise)
    assert torch.equal(embedding, original)  # input never mutated
    changed = (out != embedding).any(dim=1)
    assert changed.tolist() == [False, False, True, True, False, False]
    expected = 0.5 * embedding[2].norm() * noise[2] / math.sqrt(DIM)
    torch.testing.assert_close(out[2] - embedding[2], expected)


def test_token_noise_scales_each_encoder_part_by_its_own_norm():
    embedding = torch.cat([torch.randn(TOKENS, 4), 100 * torch.randn(TOKENS, 12)], dim=1)
    noise = torch.ones(TOKENS, DIM)
    out = token_noise(embedding, [1], 1.0, noise, parts=(4, 12))
    torch.testing.assert_close(out[1, :4] - embedding[1, :4], embedding[1, :4].norm() / 2 * torch.ones(4))
    torch.testing.assert_close(out[1, 4:] - embedding[1, 4:], embedding[1, 4:].norm() / math.sqrt(12) * torch.ones(12))


def test_item_noise_is_reproducible_and_differs_by_item_and_step():
    a, b = item_noise((5,), 7, 0), item_noise((5,), 7, 0)
    assert torch.equal(a, b)
    assert not torch.equal(a, item_noise((5,), 7, 1)) and not torch.equal(a, item_noise((5,), 7, 0, step=1))
    assert not torch.equal(a, item_noise((5,), 8, 0))


def test_vae_draws_resample_per_step_unless_fixed():
    vae = make_vae("token_mlp", trained=True)
    rows = torch.randn(1, TOKENS, DIM).expand(2, -1, -1)
    per_step = VAEDraws(vae, seed=3)
    first = per_step.sample(rows, [0, 1], 0, torch.tensor(500.0))
    assert not torch.allclose(first[0], first[1])
    torch.testing.assert_close(per_step.sample(rows, [0, 1], 0, torch.tensor(500.0)), first)
    assert not torch.allclose(per_step.sample(rows, [0, 1], 1, torch.tensor(500.0)), first)
    fixed = VAEDraws(vae, seed=3, per_step=False)
    torch.testing.assert_close(fixed.sample(rows, [0, 1], 4, torch.tensor(500.0)), first)


class ContextEps(torch.nn.Module):
    """ε depends on the latent and, through a linear map, on the context: the null text matters."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.text = torch.randn(TOKENS * DIM, 4 * 16, generator=g) * 0.1

    def forward(self, x, sigma, context):
        return 0.1 * x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2) ** 0.5 + torch.tanh(context.flatten(1) @ self.text).reshape(x.shape)


def test_null_text_vae_training_lowers_the_loss():
    torch.manual_seed(0)
    model = ContextEps()
    cond, null = torch.randn(1, TOKENS, DIM), torch.randn(1, TOKENS, DIM)
    sigmas = torch.cat([torch.exp(torch.linspace(math.log(14.6), math.log(0.03), 8)), torch.zeros(1)])
    eps_cond = lambda x, s: model(x, s, cond)  # noqa: E731
    pivots = ddim_invert(eps_cond, torch.randn(1, 4, 4, 4), sigmas, None)
    path = Trajectory(pivots, sigmas, torch.linspace(999, 0, 9), null.expand(8, -1, -1), eps_cond)
    vae = make_vae("sequence_mlp")
    seen = []
    losses = train_null_text_vae(vae, model, [path], NullTextVAESettings(iterations=120, learning_rate=3e-3, batch=2),
                                 progress=lambda d, t, loss: seen.append((d, t)))
    assert seen[-1] == (120, 120)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    print(f"loss {first:.4g} -> {last:.4g}")
    assert last < 0.5 * first


def conditional_setup():
    from comfyui_prompt_edit.vae_embed.training import EditTrajectory

    torch.manual_seed(0)
    model = ContextEps()
    g = torch.Generator().manual_seed(1)
    image_map, text_map = torch.randn(64, 8, generator=g), torch.randn(DIM, 8, generator=g)

    def image_features(x0):  # (CLIP-like features, perceptual features)
        flat = x0.flatten(1)
        return flat @ image_map, torch.tanh(flat)

    def text_features(embedding):
        return embedding.float().mean(dim=1) @ text_map

    edit, null = torch.randn(1, TOKENS, DIM), torch.randn(1, TOKENS, DIM)
    sigmas = torch.cat([torch.exp(torch.linspace(math.log(14.6), math.log(0.03), 6)), torch.zeros(1)])
    latents = ddim_invert(lambda x, s: model(x, s, edit), torch.randn(1, 4, 4, 4), sigmas, None)
    path = EditTrajectory(latents, sigmas, torch.linspace(999, 0, 7), null.expand(6, -1, -1),
                          image_features(latents[-1])[0])
    return model, edit, text_features, image_features, path


def draw_spread(vae, model, edit, path, settings):
    """Mean distance between the one-step predictions of 4 draws at the first kept latent."""
    from comfyui_prompt_edit.inversion.ddim import guided_eps

    with torch.no_grad():
        varied, _, _ = vae(edit.expand(4, -1, -1), path.timesteps[:1], torch.randn(vae.latent_shape(4), generator=torch.Generator().manual_seed(9)))
        x, sigma = path.latents[0].expand(4, -1, -1, -1), path.sigmas[:1]
        x0 = x - sigma * guided_eps(model(x, sigma, path.nulls[:1].expand(4, -1, -1)), model(x, sigma, varied), settings.guidance)
        return float(torch.pdist(x0.flatten(1)).mean())


def test_conditional_vae_training_follows_eq_4():
    from comfyui_prompt_edit.vae_embed.training import (
        ConditionalVAESettings,
        train_conditional_vae,
    )

    model, edit, text_features, image_features, path = conditional_setup()
    spreads, losses = {}, {}
    for gamma in (0.0, -1.0):
        vae = make_vae("token_mlp")
        settings = ConditionalVAESettings(iterations=60, variations=3, learning_rate=3e-3, diversity_weight=gamma, kl_weight=1e-3)
        losses[gamma] = train_conditional_vae(vae, model, edit, text_features, image_features, [path], settings)
        spreads[gamma] = draw_spread(vae, model, edit, path, settings)
    print(f"spread without / with diversity loss: {spreads}")
    clip_only = losses[0.0]
    assert sum(clip_only[-10:]) < sum(clip_only[:10])  # the CLIP + KL objective goes down
    assert spreads[-1.0] > 1.5 * spreads[0.0]  # γ < 0 spreads the draws' images apart


def test_conditional_settings_refuse_what_the_paper_rules_out():
    from comfyui_prompt_edit.vae_embed.training import ConditionalVAESettings

    with pytest.raises(ValueError, match="γ ≤ 0"):
        ConditionalVAESettings(diversity_weight=0.5)
    with pytest.raises(ValueError, match="at least 2 draws"):
        ConditionalVAESettings(variations=1)
