"""Inversion core without ComfyUI: DDIM inversion, null-text optimisation, results, metrics."""

import math

import pytest
import torch

from comfyui_prompt_edit.inversion.ddim import ddim_invert, guided_trajectory
from comfyui_prompt_edit.base.image_metrics import latent_mse, psnr, ssim
from comfyui_prompt_edit.inversion.null_text import NullTextSettings, null_text_invert
from comfyui_prompt_edit.inversion.result import Inversion, InversionFileError


class TextOnlyEps(torch.nn.Module):
    """ε depends on the text only, so it is constant along the sampling ODE: DDIM inversion is
    exact, and any reconstruction error comes from guidance."""

    def __init__(self, tokens: int = 4, width: int = 16):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.text = torch.nn.Linear(tokens * width, 4 * 64, bias=False)
        with torch.no_grad():
            self.text.weight.copy_(torch.randn(self.text.weight.shape, generator=g) * 0.5)
        self.requires_grad_(False)

    def forward(self, x, sigma, context):
        return torch.tanh(self.text(context.flatten(1))).reshape(x.shape)


def schedule(steps: int) -> torch.Tensor:
    return torch.cat([torch.exp(torch.linspace(math.log(14.6), math.log(0.03), steps)), torch.zeros(1)])


@pytest.fixture
def toy():
    torch.manual_seed(1)
    model = TextOnlyEps()
    cond = torch.randn(1, 4, 16)
    null = cond + 0.05 * torch.randn(1, 4, 16)
    return model, (lambda x, s: model(x, s, cond)), torch.randn(1, 4, 8, 8), cond, null


def sample_guided(eps_cond, eps_uncond, x, sigmas, unconds, guidance):
    """Where guided Euler/DDIM sampling with ``unconds[k]`` at step ``k`` ends."""
    return guided_trajectory(eps_cond, eps_uncond, x, sigmas, unconds, guidance)[-1]


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def test_ddim_inversion_then_sampling_at_cfg_1_reconstructs_exactly_for_a_constant_ode(toy):
    model, eps_cond, x0, cond, _ = toy
    sigmas = schedule(10)
    trajectory = ddim_invert(eps_cond, x0, sigmas, None)
    assert len(trajectory) == 11 and torch.equal(trajectory[-1], x0)
    unconds = cond.expand(10, -1, -1)
    assert rel_err(sample_guided(eps_cond, model, trajectory[0], sigmas, unconds, 1.0), x0) < 1e-5


def test_source_init_reconstructs_at_once_when_the_ode_is_constant(toy):
    """Starting from the prompt's own context, the guided step equals the inversion's step."""
    model, eps_cond, x0, cond, null = toy
    sigmas = schedule(10)
    pivots = ddim_invert(eps_cond, x0, sigmas, None)
    fast = null_text_invert(eps_cond, model, pivots, sigmas, cond, null,
                            NullTextSettings(init="source", check_before_step=True))
    assert sum(fast.inner_steps) == 0
    assert rel_err(sample_guided(eps_cond, model, pivots[0], sigmas, fast.unconds, 7.5), x0) < 1e-5


@pytest.mark.parametrize("updates", [1, 2])
def test_secant_line_search_reconstructs_better_than_adam_for_the_same_updates(toy, updates):
    model, eps_cond, x0, cond, null = toy
    sigmas = schedule(10)
    pivots = ddim_invert(eps_cond, x0, sigmas, None)
    drift = rel_err(sample_guided(eps_cond, model, pivots[0], sigmas, null.expand(10, -1, -1), 7.5), x0)
    errors = {}
    for optimizer in ("adam", "secant"):
        settings = NullTextSettings(inner_steps=updates, epsilon=0.0, optimizer=optimizer)
        result = null_text_invert(eps_cond, model, pivots, sigmas, cond, null, settings)
        assert result.inner_steps == [updates] * 10
        errors[optimizer] = rel_err(sample_guided(eps_cond, model, pivots[0], sigmas, result.unconds, 7.5), x0)
    print(f"drift {drift:.4f}, {errors}")
    assert errors["secant"] < errors["adam"] < drift
    assert errors["secant"] * 3 < drift


def test_resting_steps_keep_the_previous_context_but_never_the_last_step(toy):
    model, eps_cond, x0, cond, null = toy
    sigmas = schedule(8)
    pivots = ddim_invert(eps_cond, x0, sigmas, None)
    drift = rel_err(sample_guided(eps_cond, model, pivots[0], sigmas, null.expand(8, -1, -1), 7.5), x0)
    settings = NullTextSettings(inner_steps=1, epsilon=0.0, optimizer="secant", rest_every=3)
    result = null_text_invert(eps_cond, model, pivots, sigmas, cond, null, settings)
    assert result.inner_steps == [1, 0, 1, 1, 0, 1, 1, 1]  # steps 1 and 4 rest; 7 is the last
    assert torch.equal(result.unconds[1], result.unconds[0]) and torch.equal(result.unconds[4], result.unconds[3])
    assert not torch.equal(result.unconds[2], result.unconds[1])
    # guided sampling with these contexts still lands close to the photo
    assert rel_err(sample_guided(eps_cond, model, pivots[0], sigmas, result.unconds, 7.5), x0) * 3 < drift


def test_guidance_must_exceed_one():
    with pytest.raises(ValueError, match="guidance"):
        NullTextSettings(guidance=1.0)


def test_progress_and_prompt_interruption(toy):
    model, eps_cond, x0, cond, null = toy
    sigmas = schedule(5)
    pivots = ddim_invert(eps_cond, x0, sigmas, None)
    seen = []
    null_text_invert(eps_cond, model, pivots, sigmas, cond, null, NullTextSettings(inner_steps=3, epsilon=0.0),
                     progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (15, 15) and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))

    class Stop(Exception):
        pass

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        null_text_invert(eps_cond, model, pivots, sigmas, cond, null, NullTextSettings(inner_steps=3, epsilon=0.0),
                         check_interrupt=interrupt)
    assert len(calls) == 2  # stopped within one inner step


def make_inversion():
    return Inversion(torch.randn(3, 77, 8), torch.tensor([3.0, 2.0, 1.0, 0.0]), torch.randn(1, 4, 8, 8),
                     torch.randn(1, 4, 8, 8), 7.5, "null-text", "ddim_uniform", 3, "abc123")


def test_inversion_save_load_round_trip_is_exact(tmp_path):
    inv = make_inversion()
    inv.save(tmp_path / "a.safetensors")
    back = Inversion.load(tmp_path / "a.safetensors")
    for name in ("unconds", "sigmas", "noisy", "source"):
        assert torch.equal(getattr(back, name), getattr(inv, name))
    assert (back.guidance, back.method, back.scheduler, back.steps, back.model_fingerprint) == (7.5, "null-text", "ddim_uniform", 3, "abc123")
    assert [back.step_at(s) for s in (3.0, 2.0, 1.0)] == [0, 1, 2]


def test_corrupt_or_foreign_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(InversionFileError, match="not a readable safetensors file"):
        Inversion.load(bad)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InversionFileError, match="not an inversion saved by this pack"):
        Inversion.load(tmp_path / "other.safetensors")


def test_psnr_of_known_noise_and_identity():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 32, 32, 3, generator=g)
    b = a + 0.1  # MSE 0.01 → 20 dB
    torch.testing.assert_close(psnr(b, a), torch.full((2,), 20.0, dtype=torch.float64))
    assert torch.isinf(psnr(a, a)).all()
    torch.testing.assert_close(latent_mse(b, a), torch.full((2,), 0.01, dtype=torch.float64))


def test_ssim_identity_and_degradation():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 32, 32, 3, generator=g)
    torch.testing.assert_close(ssim(a, a), torch.ones(1, dtype=torch.float64))
    slightly = ssim((a + 0.02 * torch.randn(a.shape, generator=g)).clamp(0, 1), a)
    heavily = ssim((a + 0.3 * torch.randn(a.shape, generator=g)).clamp(0, 1), a)
    assert 1.0 > float(slightly) > float(heavily)
    # a constant shift leaves structure: SSIM stays high while PSNR drops
    assert float(ssim((a * 0.5 + 0.25), a * 0.5 + 0.25)) == pytest.approx(1.0)


def test_metric_inputs_must_match():
    with pytest.raises(ValueError, match="differ"):
        psnr(torch.zeros(1, 8, 8, 3), torch.zeros(1, 16, 16, 3))


def test_the_paired_forward_gives_the_same_inversion_with_one_model_call_less_per_step(toy):
    model, eps_cond, x0, cond, null = toy
    sigmas = schedule(10)
    pivots = ddim_invert(eps_cond, x0, sigmas, None)
    calls = {"single": 0, "paired": 0}

    def counted_cond(x, s):
        calls["single"] += 1
        return eps_cond(x, s)

    def paired(x, s, context_a, context_b):
        calls["paired"] += 1
        both = model(x.expand(2, -1, -1, -1), s, torch.cat([context_a, context_b]))
        return both[:1], both[1:]

    settings = NullTextSettings(inner_steps=2, epsilon=0.0, optimizer="secant", init="source")
    alone = null_text_invert(counted_cond, model, pivots, sigmas, cond, null, settings)
    assert calls == {"single": 10, "paired": 0}
    calls["single"] = 0
    shared = null_text_invert(counted_cond, model, pivots, sigmas, cond, null, settings, eps_pair=paired)
    assert calls == {"single": 0, "paired": 10}
    torch.testing.assert_close(shared.unconds, alone.unconds)


def test_direct_correction_lands_the_euler_step_on_the_pivot_and_shifts_edits_only_when_asked():
    from comfyui_prompt_edit.inversion.ddim import euler_step
    from comfyui_prompt_edit.inversion.direct import corrected_denoised

    g = torch.Generator().manual_seed(3)
    x, denoised, pivot = (torch.randn(3, 4, 8, 8, generator=g) for _ in range(3))
    pivot = pivot[:1]
    for sigma, sigma_next in ((14.6, 9.2), (0.4, 0.0)):
        for correct_edits in (False, True):
            out = corrected_denoised(x, denoised, sigma, sigma_next, pivot, correct_edits)
            landed = euler_step(x, (x - out) / sigma, torch.tensor(sigma), torch.tensor(sigma_next))
            torch.testing.assert_close(landed[:1], pivot, rtol=1e-5, atol=1e-5)
            shift = (out[:1] - denoised[:1]).expand(2, -1, -1, -1)
            torch.testing.assert_close(out[1:], denoised[1:] + shift if correct_edits else denoised[1:])
