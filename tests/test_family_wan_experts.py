"""Wan 2.2 A14B's two experts and Wan's real CFG in the inversion, through ComfyUI's stock sampling
with tiny random-weight Wan models (tests/harness/wan_models.py), on both hosts.

Invert Image with ``model_low_noise`` and ``switch_at_step`` inverts a video over both experts (the
high-noise one on steps [0, switch), the low-noise one on the rest), Apply Inversion takes either
expert with its own steps, and the video is sampled as ComfyUI samples A14B: two KSamplerAdvanced
nodes, the second starting at the switch. The null-text and negative-prompt inversions swap Wan's
unconditional umT5 context (it runs real CFG), on one model and over two experts."""

from __future__ import annotations

import pytest
import torch

from harness import wan_models
from harness.edit_checks import MIN_EDIT_CHANGE, assert_same, relative_change
from harness.inversion_runs import rel_err

pytestmark = pytest.mark.comfy

STEPS, CFG, SWITCH = 6, 4.0, 3  # the high-noise expert samples steps 0..3 of 6, the low-noise one 3..6
SOURCE, TARGET = "a photo of a cat riding a bicycle", "a photo of a dog riding a bicycle"


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name if name.startswith(("K", "PromptEdit")) else f"PromptEdit{name}"]()


@pytest.fixture(scope="module")
def experts():
    """Two different tiny WAN21 (A14B-like) experts: high-noise, low-noise."""
    from harness.comfyui import ensure_comfyui

    ensure_comfyui()
    return wan_models.tiny_wan21_model(seed=0), wan_models.tiny_wan21_model(seed=11)


@pytest.fixture(scope="module")
def clip():
    return wan_models.tiny_umt5_clip()


def encode(clip, text: str) -> list:
    import nodes

    return nodes.CLIPTextEncode().encode(clip, text)[0]


def video(frames: int, seed: int = 5) -> torch.Tensor:
    return torch.randn(1, 16, frames, 8, 8, generator=torch.Generator().manual_seed(seed))


def invert(clip, model, method: str, frames: int = 2, low=None, switch: int = SWITCH, cfg: float = CFG,
           steps: int = STEPS, **kwargs):
    """(positive, negative, noisy latent, Inversion): Invert Image of ``video(frames)``, over
    ``model`` and ``low`` from ``switch`` on where ``low`` is given."""
    positive, negative = encode(clip, SOURCE), encode(clip, "")
    extra = {"model_low_noise": low, "switch_at_step": switch} if low is not None else {}
    with torch.inference_mode():
        noisy, inversion = node("InvertImage").invert(model, positive, negative, {"samples": video(frames)}, method,
                                                      "simple", steps, cfg, 0, 1e-5, **extra, **kwargs)
    return positive, negative, noisy, inversion


def segments(high, low, positive, negative, noisy, cfg: float = CFG, switch: int = SWITCH,
             steps: int = STEPS) -> torch.Tensor:
    """A14B's sampling of an inverted latent: KSamplerAdvanced with ``high`` over steps 0..switch
    (no noise added, its leftover noise returned), then with ``low`` from switch to the end."""
    ksampler = node("KSamplerAdvanced")
    with torch.inference_mode():
        first = ksampler.sample(high, "disable", 0, steps, cfg, "euler", "simple", positive, negative, noisy,
                                0, switch, "enable")[0]
        return ksampler.sample(low, "disable", 0, steps, cfg, "euler", "simple", positive, negative, first,
                               switch, 10000, "disable")[0]["samples"]


def applied(model, inversion):
    return node("ApplyInversion").apply(model, inversion)[0]


# -- which expert at which step --------------------------------------------------------------------


def test_expert_steps_split_the_schedule_at_the_switch():
    from comfyui_prompt_edit.inversion.experts import HIGH_NOISE, LOW_NOISE, ExpertSteps, by_step

    experts = ExpertSteps(6, 2)
    assert [experts.expert_at(i) for i in range(6)] == [HIGH_NOISE] * 2 + [LOW_NOISE] * 4
    assert experts.steps_of(HIGH_NOISE) == range(2) and experts.steps_of(LOW_NOISE) == range(2, 6)
    assert ExpertSteps(6).steps_of(HIGH_NOISE) == range(6) and ExpertSteps(6).expert_at(5) == HIGH_NOISE
    for bad in (6, 7, -1):
        with pytest.raises(ValueError, match="not a step inside"):
            ExpertSteps(6, bad)
    sigmas = torch.linspace(1, 0, 7)
    loaded = []
    f = by_step([lambda x, s: ("high", float(s)), lambda x, s: ("low", float(s))], sigmas, experts, loaded.append)
    # the inversion walks the schedule backwards: the low-noise expert comes first
    called = [f(None, sigmas[i : i + 1])[0] for i in reversed(range(6))]
    assert called == ["low"] * 4 + ["high"] * 2 and loaded == [LOW_NOISE] * 4 + [HIGH_NOISE] * 2


def test_wan_inversion_over_two_experts_steps_each_pivot_with_its_expert(experts, clip):
    """Each pivot of the DDIM inversion is the step of the expert that samples that step (Wan is a
    flow model, c_in = 1: pivot i = pivot i+1 + (σ_i − σ_{i+1})·ε_expert(pivot i+1, σ_i)), and not the
    other expert's."""
    from comfyui_prompt_edit.inversion.comfy_model import eps_function

    high, low = experts
    positive, _, _, inversion = invert(clip, high, "direct", low=low)
    assert inversion.switch_at_step == SWITCH and inversion.low_noise_fingerprint != inversion.model_fingerprint
    pivots, sigmas = inversion.pivots, inversion.sigmas
    context = positive[0][0]
    eps = {name: eps_function(m, {}, pivots[:1].shape) for name, m in (("high", high), ("low", low))}
    with torch.inference_mode():
        for i in range(STEPS):
            stepped = {name: pivots[i + 1:i + 2] + (sigmas[i] - sigmas[i + 1]) * f(pivots[i + 1:i + 2], sigmas[i:i + 1],
                                                                                  context).cpu()
                       for name, f in eps.items()}
            own, other = ("high", "low") if i < SWITCH else ("low", "high")
            assert_same(stepped[own], pivots[i:i + 1])
            assert relative_change(stepped[other], pivots[i:i + 1]) > MIN_EDIT_CHANGE


# -- direct inversion over both experts --------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 3])
def test_wan_two_expert_direct_inversion_reconstructs_the_video(experts, clip, frames):
    high, low = experts
    positive, negative, noisy, inversion = invert(clip, high, "direct", frames, low=low)
    out = segments(applied(high, inversion), applied(low, inversion), positive, negative, noisy)
    error = rel_err(out, video(frames))
    plain = rel_err(segments(high, low, positive, negative, noisy), video(frames))  # no Apply Inversion
    print(f"wan A14B two-expert direct inversion, {frames} frame(s), cfg {CFG}: relative error {error:.2e} "
          f"(without Apply Inversion {plain:.3g})")
    assert out.shape == (1, 16, frames, 8, 8) and error < 1e-4
    assert plain > 0.1


def test_wan_p2p_on_each_expert_edits_the_inverted_video(experts, clip):
    """Invert Image (direct, both experts) -> P2P Prompts -> on each expert Apply Inversion then P2P
    Attention Control -> the two samplers: the source item is the video; the edited item ('dog')
    differs from the same run with the source's own words in its place (whose item follows the
    inverted noise uncorrected, as the edit's does), so the word moved it, not the inversion."""
    high, low = experts
    _, negative, noisy, inversion = invert(clip, high, "direct", low=low)

    def run(target: str) -> torch.Tensor:
        positive, lat, edit = node("P2PPrompts").build(clip, noisy, SOURCE, target)

        def controlled(model):
            return node("P2PAttentionControl").apply(applied(model, inversion), edit, "replace", 0.0, 0.8, 0.4,
                                                     "coarse")[0]

        return segments(controlled(high), controlled(low), positive, negative, lat)

    edited, same_words = run(TARGET), run(SOURCE)
    source = max(rel_err(out[:1], video(2)) for out in (edited, same_words))
    moved = relative_change(edited[1], same_words[1])
    print(f"wan A14B P2P replace after the two-expert inversion: source {source:.2e} from the video, the edit "
          f"moved by {moved:.3g} from the same run with the source's words")
    assert source < 1e-4 and moved > MIN_EDIT_CHANGE


# -- refusals ------------------------------------------------------------------------------------------


def test_wan_another_model_is_refused_by_a_two_expert_inversion(experts, clip):
    from comfyui_prompt_edit.base.errors import PromptEditError

    high, low = experts
    _, _, _, inversion = invert(clip, high, "direct", low=low)
    with pytest.raises(PromptEditError, match="inversion: this inversion was made with two other models .*connect one "
                                              "of them"):
        node("ApplyInversion").apply(wan_models.tiny_wan21_model(seed=23), inversion)


@pytest.mark.parametrize("expert,steps,fix", [("high", (0, 10000), "end this sampler at step 3"),
                                              ("low", (0, 10000), "start this sampler at step 3")])
def test_wan_an_expert_sampling_the_others_steps_is_refused(experts, clip, expert, steps, fix):
    from comfyui_prompt_edit.inversion.comfy_patch import InversionMismatchError

    high, low = experts
    positive, negative, noisy, inversion = invert(clip, high, "direct", low=low)
    model = applied(high if expert == "high" else low, inversion)
    with pytest.raises(InversionMismatchError, match=f"this model is the inversion's {expert}-noise expert.*{fix}"):
        with torch.inference_mode():
            node("KSamplerAdvanced").sample(model, "disable", 0, STEPS, CFG, "euler", "simple", positive, negative,
                                            noisy, *steps, "disable")


def test_wan_switch_at_step_without_low_model_or_out_of_range_is_refused(experts, clip):
    from comfyui_prompt_edit.base.errors import PromptEditError

    high, low = experts
    cases = [({"switch_at_step": 2}, r"switch_at_step: 2 hands the steps from 2 on to model_low_noise, which is not "
                                     "connected"),
             ({"model_low_noise": low, "switch_at_step": 0}, "switch_at_step: it is 0 .* model_low_noise is connected"),
             ({"model_low_noise": low, "switch_at_step": STEPS}, "switch_at_step: 6 is not a step inside the "
                                                                 "schedule's 6 steps; give 1 to 5"),
             ({"model_low_noise": wan_models.tiny_wan22_model(), "switch_at_step": 2},
              "model_low_noise: its latent has 48 channels, model's 16")]
    positive, negative = encode(clip, SOURCE), encode(clip, "")
    for extra, message in cases:
        with pytest.raises(PromptEditError, match=message):
            node("InvertImage").invert(high, positive, negative, {"samples": video(1)}, "direct", "simple", STEPS,
                                       CFG, 0, 1e-5, **extra)


def test_wan_two_expert_inversion_saves_and_loads_with_its_experts(experts, clip, tmp_path):
    from comfyui_prompt_edit.inversion.result import Inversion, InversionFileError

    high, low = experts
    positive, negative, noisy, inversion = invert(clip, high, "direct", low=low)
    path = tmp_path / "two.safetensors"
    inversion.save(path)
    loaded = Inversion.load(path)
    assert (loaded.switch_at_step, loaded.low_noise_fingerprint) == (SWITCH, inversion.low_noise_fingerprint)
    out = segments(applied(high, loaded), applied(low, loaded), positive, negative, noisy)
    assert rel_err(out, video(2)) < 1e-4
    loaded.switch_at_step = STEPS
    loaded.save(path)
    with pytest.raises(InversionFileError, match="switch_at_step"):
        Inversion.load(path)


def test_embedding_vae_training_refuses_a_two_expert_inversion(experts, clip):
    """Training an embedding VAE follows one model's guided steps: an inversion over two experts is
    refused, naming it (Wan refuses the embedding VAE anyway; the check is the inversion's)."""
    from comfyui_prompt_edit.inversion.comfy_patch import InversionMismatchError
    from comfyui_prompt_edit.vae_embed.comfy_training import training_schedule

    high, low = experts
    _, _, _, inversion = invert(clip, high, "ddim", low=low)
    with pytest.raises(InversionMismatchError, match="inversion: it was made over two experts"):
        training_schedule(high, inversion, "simple", STEPS)
    _, _, _, one = invert(clip, high, "ddim")
    assert torch.equal(training_schedule(high, one, "simple", STEPS), one.sigmas)


# -- the sampler's start: only step 0 starts on the inverted latent --------------------------------------


def test_wan_inversion_sampled_in_two_segments_equals_one_run(experts, clip):
    """A flow model's second KSamplerAdvanced (start_at_step k, add_noise disable) continues from the
    first's output as the stock sampler does: the same inversion sampled in one run and in two
    segments gives the same video (ddim: no correction would hide a wrong start)."""
    high, _ = experts
    positive, negative, noisy, inversion = invert(clip, high, "ddim")
    model = applied(high, inversion)
    with torch.inference_mode():
        whole = node("KSamplerAdvanced").sample(model, "disable", 0, STEPS, CFG, "euler", "simple", positive, negative,
                                                noisy, 0, 10000, "disable")[0]["samples"]
    assert_same(segments(model, model, positive, negative, noisy), whole)


# -- null-text and negative-prompt inversion on Wan (real CFG) --------------------------------------------

NT_STEPS, NT_SWITCH = 10, 5
TEXT_SCALE = 10.0


@pytest.fixture(scope="module")
def guided_experts():
    """Experts whose output the guidance moves: the tiny umT5's columns are small (its final norm
    holds random 0.02-scale weights), so through the plain tiny Wan cfg 4 and cfg 1 reconstruct
    within 1 % of each other and null-text would have nothing to undo; the text embedding's output
    layer scaled ×10 makes the text, and so the guidance, matter."""
    from harness.comfyui import ensure_comfyui

    ensure_comfyui()
    models = wan_models.tiny_wan21_model(seed=0), wan_models.tiny_wan21_model(seed=11)
    with torch.no_grad():
        for model in models:
            model.model.diffusion_model.text_embedding[-1].weight.mul_(TEXT_SCALE)
    return models


def reconstruction_errors(clip, high, low, methods: tuple[str, ...]) -> dict[str, float]:
    """Relative error of the video sampled back after each method's inversion at cfg CFG (two
    segments, each expert through its own Apply Inversion; ``low`` None: ``high`` walks both), and
    as 'floor' the ddim inversion sampled at cfg 1, where there is no guidance to undo."""
    errors = {}
    for method, cfg in [*((m, CFG) for m in methods), ("floor", 1.0)]:
        positive, negative, noisy, inversion = invert(clip, high, "ddim" if method == "floor" else method, low=low,
                                                      switch=NT_SWITCH, cfg=cfg, steps=NT_STEPS)
        out = segments(applied(high, inversion), applied(low or high, inversion), positive, negative, noisy, cfg,
                       NT_SWITCH, NT_STEPS)
        errors[method] = rel_err(out, video(2))
    return errors


def test_wan_null_text_inversion_undoes_the_guidance(guided_experts, clip):
    """Null-text methods remove most of what plain DDIM inversion loses to the guidance (ddim at cfg 4
    against the cfg-1 floor); negative-prompt (the source prompt as the unconditional context: the
    guided ε is the conditional one) reconstructs exactly as the floor."""
    high, _ = guided_experts
    errors = reconstruction_errors(clip, high, None, ("ddim", "negative-prompt", "null-text", "null-text fast"))
    print(f"wan inversion at cfg {CFG}, {NT_STEPS} steps, relative error: "
          + ", ".join(f"{k} {v:.3g}" for k, v in errors.items()))
    excess = errors["ddim"] - errors["floor"]
    assert excess > 0.1 * errors["floor"]  # the guidance matters here
    for method in ("null-text", "null-text fast"):  # at least half the guidance's excess removed
        assert errors[method] < errors["floor"] + excess / 2, method
    assert abs(errors["negative-prompt"] - errors["floor"]) < 1e-3 * errors["floor"]


def test_wan_two_expert_null_text_inversion_undoes_the_guidance(guided_experts, clip):
    high, low = guided_experts
    errors = reconstruction_errors(clip, high, low, ("ddim", "null-text", "null-text fast"))
    print(f"wan A14B two-expert inversion at cfg {CFG}, {NT_STEPS} steps, switch {NT_SWITCH}, relative error: "
          + ", ".join(f"{k} {v:.3g}" for k, v in errors.items()))
    excess = errors["ddim"] - errors["floor"]
    assert excess > 0.1 * errors["floor"]
    for method in ("null-text", "null-text fast"):  # at least half the guidance's excess removed
        assert errors[method] < errors["floor"] + excess / 2, method
