"""Wan 2.1 / 2.2 text-to-video through ComfyUI's stock sampling with tiny random-weight models and a
tiny umT5 (tests/harness/wan_models.py), on both hosts: P2P Prompts' umT5 words, P2P Attention
Control (replace, refine, reweight; self-attention injection) on the cross-attention calls through
the attention override, local blend frame by frame, attention maps, and Invert Image 'direct' /
Apply Inversion through KSamplerAdvanced, for one frame and several."""

from __future__ import annotations

import pytest
import torch

from harness import wan_models
from harness.edit_checks import MIN_EDIT_CHANGE, assert_edit_moves, assert_same, relative_change

pytestmark = pytest.mark.comfy

STEPS, SEED, CFG = 6, 7, 4.0
SOURCE = "a photo of a cat riding a bicycle"
TARGETS = {"replace": "a photo of a dog riding a bicycle", "refine": "a photo of a cat riding a red bicycle",
           "reweight": SOURCE}
MODELS = {"wan21": (wan_models.tiny_wan21_model, 16), "wan22": (wan_models.tiny_wan22_model, 48)}


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name if name.startswith(("K", "PromptEdit", "UNET")) else f"PromptEdit{name}"]()


@pytest.fixture(scope="module")
def models():
    from harness.comfyui import ensure_comfyui

    ensure_comfyui()
    return {name: build() for name, (build, _) in MODELS.items()}


@pytest.fixture(scope="module")
def clip():
    return wan_models.tiny_umt5_clip()


def latent(model_name: str, frames: int, batch: int = 1) -> dict:
    return {"samples": torch.zeros(batch, MODELS[model_name][1], frames, 8, 8)}


def prompts(clip, target: str, frames: int = 1, model_name: str = "wan21"):
    """P2P Prompts' (positive, latent, p2p_edit) for the source and one edited prompt."""
    return node("P2PPrompts").build(clip, latent(model_name, frames), SOURCE, target)


def _encode(clip, text: str) -> list:
    import nodes

    return nodes.CLIPTextEncode().encode(clip, text)[0]


def sample(model, positive, negative, latent_image):
    import comfy.sample

    samples = latent_image["samples"]
    noise = comfy.sample.prepare_noise(samples, SEED, latent_image.get("batch_index"))
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, STEPS, CFG, "euler", "simple", positive, negative, samples,
                                   seed=SEED, disable_pbar=True)


def control(model, edit, kind="replace", self_end=0.4):
    return node("P2PAttentionControl").apply(model, edit, kind, 0.0, 0.8, self_end, "coarse")


def item_conditioning(positive, index: int) -> list:
    """Item ``index`` of a batched CONDITIONING (extras of batch 1, as image-to-video's, stay as they are)."""
    cond, extras = positive[0]
    return [[cond[index:index + 1], {k: (v[index:index + 1] if isinstance(v, torch.Tensor) and v.shape[0] > 1 else v)
                                     for k, v in extras.items()}]]


def test_wan_models_are_the_wan_family_with_real_cfg(models):
    from comfyui_prompt_edit.families import family_of

    for model in models.values():
        family = family_of(model)
        assert family.id == "wan" and family.real_cfg(model) and not family.is_joint and not family.is_unet


def test_wan_umt5_words_lie_at_their_columns(clip):
    from comfyui_prompt_edit.attention.clip_tokens import clip_words
    from comfyui_prompt_edit.attention.tokens import END, PAD

    _, _, edit = prompts(clip, TARGETS["replace"])
    assert edit.encoder == "wan" and edit.num_columns == 512
    for tokens in (edit.source, edit.targets[0]):
        assert [w.text for w in tokens.words] == tokens.text.split()
        for word in tokens.words:  # each word's pieces spell it, '▁' first, in consecutive columns
            pieces = "".join(tokens.token_strings[c] for c in word.columns)
            assert pieces.replace("▁", "") == word.text and pieces.startswith("▁")
            assert list(word.columns) == list(range(word.columns[0], word.columns[-1] + 1))
        end = tokens.words[-1].columns[-1] + 1
        assert tokens.token_strings[end] == END and set(tokens.token_strings[end + 1:]) == {PAD}
    assert clip_words(clip, "a red bicycle") == ("a", "red", "bicycle")
    assert edit.source.find(("cat",)) and edit.targets[0].find(("dog",))


@pytest.mark.parametrize("frames", [1, 3])
def test_wan_equal_prompts_give_the_source_and_the_source_is_plain_sampling(models, clip, frames):
    model = models["wan21"]
    positive, lat, edit = prompts(clip, SOURCE, frames)
    negative = _encode(clip, "")
    edited = sample(control(model, edit)[0], positive, negative, lat)
    plain = sample(model, item_conditioning(positive, 0), negative, latent("wan21", frames))
    assert_same(edited[1], edited[0])
    assert_same(edited[0], plain[0])


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("kind", ["replace", "refine", "reweight"])
def test_wan_edit_moves_the_edited_item_and_keeps_the_source(models, clip, model_name, kind):
    model = models[model_name]
    positive, lat, edit = prompts(clip, TARGETS[kind], 2, model_name)
    if kind == "reweight":
        edit = node("P2PReweight").reweight(edit, clip, "cat", 3.0)[0]
    negative = _encode(clip, "")
    plain = sample(model, positive, negative, lat)
    edited = sample(control(model, edit, kind)[0], positive, negative, lat)
    changes = assert_edit_moves(edited, plain)
    print(f"wan {model_name} {kind}: edited item moved by {changes[1]:.3g} relative, source {changes[0]:.1e}")


def test_wan_self_attention_injection_alone_moves_the_edit(models, clip):
    """Cross-attention window empty: only the self-attention injection (value trick) acts."""
    model = models["wan21"]
    positive, lat, edit = prompts(clip, TARGETS["replace"], 2)
    negative = _encode(clip, "")
    plain = sample(model, positive, negative, lat)
    patched = node("P2PAttentionControl").apply(model, edit, "replace", 0.0, 0.0, 0.5, "coarse")[0]
    changes = assert_edit_moves(sample(patched, positive, negative, lat), plain)
    print(f"wan self-attention injection only: edited item moved by {changes[1]:.3g} relative")


def test_wan_maps_lie_on_the_frames_grid(models, clip):
    positive, lat, edit = prompts(clip, TARGETS["replace"], 3)
    patched, handle = control(models["wan21"], edit)
    samples = sample(patched, positive, _encode(clip, ""), lat)
    from comfyui_prompt_edit.attention.tokens import END

    store = handle.store
    assert store.spatial == (3, 4, 4)
    # only the prompts' words and end columns are recorded (not video tokens × 512 per step)
    words = {c for p in (edit.source, edit.targets[0]) for w in p.words for c in w.columns}
    ends = {c for p in (edit.source, edit.targets[0]) for c, s in enumerate(p.token_strings) if s == END}
    assert set(store.columns) == words | ends and len(store.columns) < 64  # of 512
    maps = store.average(("output",))
    assert maps.shape == (2, 3, 4, 4, len(store.columns)) and torch.isfinite(maps).all()
    # probabilities over all 512 columns, of which these few are kept: each token's share is in (0, 1]
    share = maps.sum(-1)
    assert float(share.min()) > 0.01 and float(share.max()) <= 1 + 1e-5
    image = node("P2PAttentionMaps").render(handle, {"samples": samples}, 1, "input+output", 0.0, 1.0, False, 64, 4)[0]
    assert image.ndim == 4 and torch.isfinite(image).all()


def test_wan_blend_mask_is_made_frame_by_frame():
    from comfyui_prompt_edit.attention.local_blend import blend_mask

    maps = torch.zeros(2, 2, 4, 4, 3)  # [B, F, h, w, N]: the word (column 1) sits left in frame 0, right in frame 1
    maps[:, 0, :, 0, 1] = 1.0
    maps[:, 1, :, 3, 1] = 0.01  # a weak frame still gets its own region (each frame normalised by its own peak)
    selectors = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    mask = blend_mask(maps, selectors, (8, 8), 0.5)
    assert mask.shape == (1, 1, 2, 8, 8)
    assert mask[0, 0, 0, :, :2].min() == 1 and mask[0, 0, 0, :, 4:].max() == 0
    assert mask[0, 0, 1, :, 6:].min() == 1 and mask[0, 0, 1, :, :4].max() == 0


def test_wan_local_blend_confines_the_edit_frame_by_frame(models, clip, monkeypatch):
    from comfyui_prompt_edit.attention import local_blend

    positive, lat, edit = prompts(clip, TARGETS["replace"], 2)
    edit = node("P2PLocalBlend").blend(edit, clip, "cat", "dog", 0.3, 0.0)[0]
    mask = torch.zeros(1, 1, 2, 8, 8)  # frame 0: left half, frame 1: right half
    mask[..., 0, :, :4] = 1
    mask[..., 1, :, 4:] = 1
    seen = []

    def per_frame(maps, selectors, latent_hw, threshold):
        seen.append(tuple(maps.shape))
        return mask

    monkeypatch.setattr(local_blend, "blend_mask", per_frame)
    out = sample(control(models["wan21"], edit)[0], positive, _encode(clip, ""), lat)
    assert len(seen) == STEPS and seen[0][:4] == (2, 2, 4, 4) and seen[0][4] < 64  # the recorded columns only
    diff = (out[1] - out[0]).abs()
    assert float(diff[:, 0, :, 4:].max()) == 0.0 and float(diff[:, 1, :, :4].max()) == 0.0
    inside = min(float(diff[:, 0, :, :4].max()), float(diff[:, 1, :, 4:].max()))
    print(f"wan local blend: inside the mask the edit differs by {inside:.3g}, outside by 0")
    assert inside > 1e-3


def test_wan_local_blend_from_the_maps_runs(models, clip):
    positive, lat, edit = prompts(clip, TARGETS["replace"], 2)
    edit = node("P2PLocalBlend").blend(edit, clip, "cat", "dog", 0.3, 0.0)[0]
    out = sample(control(models["wan21"], edit)[0], positive, _encode(clip, ""), lat)
    assert out.shape == (2, 16, 2, 8, 8) and torch.isfinite(out).all()


def neighbour_disagreement(mask: torch.Tensor) -> float:
    """The share of a video mask's ``[E, 1, F, h, w]`` pixels that differ between consecutive frames."""
    return float((mask[:, :, 1:] != mask[:, :, :-1]).float().mean())


def test_wan_local_blend_temporal_smoothing_confines_the_edit_and_neighbouring_frames_agree(models, clip, monkeypatch):
    """The maps' own masks (4 frames of 16 × 16 latent pixels, threshold 0.7), once per frame and once
    smoothed over σ = 2 frames: in both the final edit differs from the source only inside the last
    step's mask, frame by frame, and smoothing makes consecutive frames' masks agree more (measured
    on 0.33.0: 42 % of pixels differ between neighbouring frames, averaged over the steps, without;
    10 % with)."""
    from comfyui_prompt_edit.attention import local_blend
    from comfyui_prompt_edit.attention.errors import P2PInputError

    real_mask, frames = local_blend.blend_mask, 4
    with pytest.raises(P2PInputError, match="temporal_smoothing: -1.0 is negative"):
        node("P2PLocalBlend").blend(prompts(clip, TARGETS["replace"])[2], clip, "cat", "dog", 0.7, 0.0, -1.0)
    runs = {}
    for sigma in (0.0, 2.0):
        positive, lat, edit = node("P2PPrompts").build(clip, {"samples": torch.zeros(1, 16, frames, 16, 16)}, SOURCE,
                                                       TARGETS["replace"])
        edit = node("P2PLocalBlend").blend(edit, clip, "cat", "dog", 0.7, 0.0, sigma)[0]
        masks = []

        def recorded(*args, **options):
            masks.append((real_mask(*args, **options), options))
            return masks[-1][0]

        monkeypatch.setattr(local_blend, "blend_mask", recorded)
        out = sample(control(models["wan21"], edit)[0], positive, _encode(clip, ""), lat)
        assert len(masks) == STEPS and masks[0][0].shape == (1, 1, frames, 16, 16)
        # 0: the call as it was before the option
        assert all(options == ({"temporal_sigma": sigma} if sigma else {}) for _, options in masks)
        last = masks[-1][0][0]  # [1, F, h, w], broadcast over the channels
        assert 0 < float(last.mean()) < 1, "the last mask must leave an outside to check"
        outside = relative_change(out[1] * (1 - last), out[0] * (1 - last))
        inside = relative_change(out[1] * last, out[0] * last)
        assert outside <= 1e-5 and inside > MIN_EDIT_CHANGE, (sigma, outside, inside)
        runs[sigma] = [m for m, _ in masks], outside, inside
    (plain, plain_outside, plain_inside), (smoothed, outside, inside) = runs[0.0], runs[2.0]
    # the first step's maps are the same in both runs: smoothing only adds to each frame's region
    assert bool((smoothed[0] >= plain[0]).all()) and not torch.equal(smoothed[0], plain[0])
    before = sum(map(neighbour_disagreement, plain)) / STEPS
    after = sum(map(neighbour_disagreement, smoothed)) / STEPS
    print(f"wan temporal smoothing σ=2: neighbouring frames' masks differ in {before:.1%} of pixels without, "
          f"{after:.1%} with; outside the mask the edit differs by {plain_outside:.1e} / {outside:.1e} (relative), "
          f"inside by {plain_inside:.3g} / {inside:.3g}")
    assert before > 0.1 and after < 0.5 * before


@pytest.mark.parametrize("frames", [1, 3])
def test_wan_maps_show_the_frames_averaged_as_a_grid_or_one_image_per_frame(models, clip, frames):
    from comfyui_prompt_edit.attention.errors import P2PInputError
    from comfyui_prompt_edit.attention.visualize import (CAPTION_HEIGHT, FRAME_GAP, LABEL_HEIGHT, label_grid,
                                                         token_tiles)

    positive, lat, edit = prompts(clip, TARGETS["replace"], frames)
    patched, handle = control(models["wan21"], edit)
    samples = {"samples": sample(patched, positive, _encode(clip, ""), lat)}
    render = node("P2PAttentionMaps").render
    shown = {mode: render(handle, samples, 1, "input+output", 0.0, 1.0, False, 64, 8, None, mode)[0]
             for mode in ("average", "grid", "per frame")}
    assert torch.equal(render(handle, samples, 1, "input+output", 0.0, 1.0, False, 64, 8)[0], shown["average"])
    maps = handle.store.average(handle.map_places(("input", "output")))[1]  # [F, h, w, columns]
    columns = handle.store.column_index([c for w in edit.targets[0].words for c in w.columns])
    labels = edit.targets[0].token_labels()
    labels = [labels[c] for w in edit.targets[0].words for c in w.columns]
    # the grid the node showed before, of the frames' mean (an image's maps: of its one frame)
    assert torch.equal(shown["average"], label_grid(token_tiles(maps.mean(0), columns, 64), labels, 8))
    if frames == 1:
        assert torch.equal(shown["grid"], shown["average"]) and torch.equal(shown["per frame"], shown["average"])
        return
    bands = -(-len(columns) // 8)  # a tile a column (umT5 piece), 8 a row
    band = LABEL_HEIGHT + frames * 64 + (frames - 1) * FRAME_GAP
    assert shown["grid"].shape == (1, bands * band + (bands - 1) * LABEL_HEIGHT, shown["grid"].shape[2], 3)
    assert shown["grid"].shape[2] > 8 * (64 + FRAME_GAP)  # the pieces' columns and the frames' labels
    per_frame = shown["per frame"]
    assert per_frame.shape == (frames, CAPTION_HEIGHT + bands * (64 + LABEL_HEIGHT), 8 * 64, 3)
    tiles = per_frame[:, CAPTION_HEIGHT:CAPTION_HEIGHT + 64]
    assert float((tiles[1:] - tiles[:-1]).abs().max()) > 0.05  # the frames' maps differ
    # decoded pictures: the batch's two videos of 4(F − 1) + 1 pixel frames each; laid under the maps
    pictures = torch.rand(2 * (4 * (frames - 1) + 1), 32, 32, 3, generator=torch.Generator().manual_seed(0))
    over = render(handle, samples, 1, "input+output", 0.0, 1.0, False, 64, 8, pictures, "per frame")[0]
    assert over.shape == per_frame.shape and not torch.equal(over, per_frame)
    with pytest.raises(P2PInputError, match="images: .* not the 2 videos of the batch"):
        render(handle, samples, 1, "input+output", 0.0, 1.0, False, 64, 8, pictures[1:], "grid")


def photo(model_name: str, frames: int, seed: int = 5) -> torch.Tensor:
    return torch.randn(1, MODELS[model_name][1], frames, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model_name,frames", [("wan21", 1), ("wan21", 3), ("wan22", 1), ("wan22", 2)])
def test_wan_direct_inversion_reconstructs_exactly(models, clip, model_name, frames):
    from harness.inversion_runs import rel_err

    model = models[model_name]
    positive, negative = _encode(clip, SOURCE), _encode(clip, "")
    with torch.inference_mode():
        noisy, inversion = node("PromptEditInvertImage").invert(
            model, positive, negative, {"samples": photo(model_name, frames)}, "direct", "simple", STEPS, CFG, 0, 1e-5)
    patched = node("PromptEditApplyInversion").apply(model, inversion)[0]
    with torch.inference_mode():
        out = node("KSamplerAdvanced").sample(patched, "disable", 0, STEPS, CFG, "euler", "simple", positive, negative,
                                              noisy, 0, 10000, "disable")[0]["samples"]
    error = rel_err(out, photo(model_name, frames))
    print(f"wan {model_name} {frames} frame(s) direct inversion at cfg {CFG}: relative error {error:.2e}")
    assert out.shape == (1, MODELS[model_name][1], frames, 8, 8) and error < 1e-4


def test_wan_reference_path_is_refused(models, clip):
    from comfyui_prompt_edit.attention.errors import P2PInputError

    _, _, edit = prompts(clip, TARGETS["replace"])
    with pytest.raises(P2PInputError, match="attention_path"):
        node("P2PAttentionControl").apply(models["wan21"], edit, "replace", 0.0, 0.8, 0.4, "coarse",
                                          attention_path="reference")


# Wan variants the pack does not edit (text- and image-to-video it does: tests/test_family_wan_i2v.py),
# built through ComfyUI's configs as its detection makes them from their files: (config, unet config
# beyond the tiny T2V one, the variant the refusal names)
OTHER_VARIANTS = {
    "first_last_frame": ("WAN21_I2V", {"model_type": "i2v", "in_dim": 36, "flf_pos_embed_token_number": 514},
                         "first-last-frame"),
    "fun_control_21": ("WAN21_FunControl2V", {"model_type": "i2v", "in_dim": 48}, "Fun control"),
    "fun_control_22": ("WAN21_T2V", {"in_dim": 52}, "Fun control"),
    "vace": ("WAN21_Vace", {"model_type": "vace", "vace_layers": 1, "vace_in_dim": 96}, "VACE"),
    "camera": ("WAN21_Camera", {"model_type": "camera", "in_dim": 32}, "camera"),
}


@pytest.mark.parametrize("variant", sorted(OTHER_VARIANTS))
def test_wan_variants_other_than_text_and_image_to_video_are_refused_by_name(clip, variant):
    import comfy.supported_models

    from comfyui_prompt_edit.families import UnsupportedModelError

    config, unet, name = OTHER_VARIANTS[variant]
    model = wan_models._patcher(getattr(comfy.supported_models, config)({**wan_models.wan_unet_config(16), **unet}), 0)
    _, _, edit = prompts(clip, TARGETS["replace"])
    refusal = f"a Wan variant the pack does not edit .*{name}.*text-to-video"
    with pytest.raises(UnsupportedModelError, match=refusal) as refused:
        control(model, edit)
    print(f"wan {variant}: {refused.value}")


def test_wan_file_loads_through_the_stock_unet_loader(tmp_path, clip):
    """0.33.0 reads the widths from the file's metadata; 0.3.64 infers them (heads of 128, a 4096-wide
    text), so there the conditioning is random at that width, its edited word's columns replaced."""
    import folder_paths

    from comfyui_prompt_edit.families import family_of

    layout = wan_models.wan_file_layout()
    path = wan_models.make_wan_file(tmp_path)
    folder_paths.add_model_folder_path("diffusion_models", str(tmp_path), is_default=True)
    model = node("UNETLoader").load_unet(path.name, "default")[0]
    diffusion_model = model.model.diffusion_model
    assert family_of(model).id == "wan"
    assert (diffusion_model.dim, diffusion_model.num_heads) == (layout["dim"], layout["heads"])
    positive, lat, edit = prompts(clip, TARGETS["replace"], 2)
    negative = _encode(clip, "")
    if layout["text_dim"] != wan_models.WAN_TEXT_DIM:
        context = wan_models.random_conditioning(2, seed=1, words=12, text_dim=layout["text_dim"])[0][0]
        dog = list(edit.targets[0].find(("dog",))[0])
        context[1] = context[0]
        context[1, dog] = torch.randn(len(dog), layout["text_dim"], generator=torch.Generator().manual_seed(9))
        positive = [[context, {}]]
        negative = wan_models.random_conditioning(1, seed=2, words=1, text_dim=layout["text_dim"])
    plain = sample(model, positive, negative, lat)
    changes = assert_edit_moves(sample(control(model, edit)[0], positive, negative, lat), plain)
    print(f"wan file: edited item moved by {changes[1]:.3g} relative")


def test_wan_token_noise_varies_the_edited_words_and_the_embedding_vae_is_refused(models, clip):
    from comfyui_prompt_edit.nodes.variations import VariationInputError

    model = models["wan21"]
    positive, lat, edit = prompts(clip, TARGETS["replace"])
    vary = node("PromptEditStochasticEmbeddings").vary
    _, varied, varied_latent, varied_edit = vary(model, positive, lat, "token noise", 2, 0, 0.3, "", edit, None, clip)
    cond = varied[0][0]
    dog = set(edit.targets[0].find(("dog",))[0])
    assert cond.shape == (3, 512, wan_models.WAN_TEXT_DIM) and varied_latent["samples"].shape[0] == 3
    changed = [set(torch.nonzero((cond[i] - positive[0][0][1]).abs().sum(-1)).flatten().tolist()) for i in (1, 2)]
    assert changed[0] == dog and changed[1] == dog and not torch.equal(cond[1], cond[2])
    assert torch.equal(cond[0], positive[0][0][0])
    out = sample(control(model, varied_edit)[0], varied, _encode(clip, ""), varied_latent)
    assert torch.isfinite(out).all()
    with pytest.raises(VariationInputError, match="embedding VAE"):
        vary(model, positive, lat, "embedding VAE", 2, 0, 0.3, "", edit, None, clip)


def test_wan_edit_runs_under_another_attention_override(models, clip):
    """Another node's override already on the model (e.g. a different kernel) runs for every call
    under the edit, and the edit still moves the edited item."""
    model = models["wan21"].clone()
    calls = []

    def counting(func, *args, **kwargs):
        calls.append(args[1].shape[1])
        return func(*args, **kwargs)

    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = counting
    positive, lat, edit = prompts(clip, TARGETS["replace"], 2)
    negative = _encode(clip, "")
    plain = sample(model, positive, negative, lat)
    calls.clear()
    assert_edit_moves(sample(control(model, edit)[0], positive, negative, lat), plain)
    blocks = len(model.model.diffusion_model.blocks)
    assert calls.count(512) >= STEPS * blocks and calls.count(2 * 16) >= STEPS * blocks  # cross and self calls


def test_wan_word_window_changes_the_edit(models, clip):
    """A per-word window (the edited word injected over fewer steps) gives another edit than the
    plain window, and the source stays plain sampling."""
    model = models["wan21"]
    positive, lat, edit = prompts(clip, TARGETS["replace"], 2)
    negative = _encode(clip, "")
    whole = sample(control(model, edit)[0], positive, negative, lat)
    windowed = node("P2PAttentionControl").apply(model, edit, "replace", 0.0, 0.8, 0.4, "coarse",
                                                 word_windows="dog=0.2", clip=clip)[0]
    changes = assert_edit_moves(sample(windowed, positive, negative, lat), whole)
    print(f"wan word window dog=0.2: edited item differs from the 0.8 window by {changes[1]:.3g} relative")


def test_wan_ddim_inversion_runs(models, clip):
    positive, negative = _encode(clip, SOURCE), _encode(clip, "")
    with torch.inference_mode():
        noisy, inversion = node("PromptEditInvertImage").invert(
            models["wan21"], positive, negative, {"samples": photo("wan21", 2)}, "ddim", "simple", STEPS, CFG, 0, 1e-5)
    assert noisy["samples"].shape == (1, 16, 2, 8, 8) and torch.isfinite(noisy["samples"]).all()
    assert inversion.method == "ddim"


# -- Wan 2.2 A14B: two experts sampled one after the other -------------------------------------------

SWITCH = 3  # the high-noise expert walks steps 0..3 of 6, the low-noise one 3..6


def two_experts(high, low, positive, negative, lat, switch: int = SWITCH) -> tuple[torch.Tensor, torch.Tensor]:
    """A14B as ComfyUI samples it: KSamplerAdvanced with the high-noise expert over the first steps
    (returning its leftover noise), then the low-noise expert over the rest (no new noise).
    Returns (the latent after the first expert, the final latent)."""
    ksampler = node("KSamplerAdvanced")
    with torch.inference_mode():
        first = ksampler.sample(high, "enable", SEED, STEPS, CFG, "euler", "simple", positive, negative, lat,
                                0, switch, "enable")[0]
        final = ksampler.sample(low, "disable", SEED, STEPS, CFG, "euler", "simple", positive, negative,
                                {**lat, "samples": first["samples"]}, switch, 10000, "disable")[0]
    return first["samples"], final["samples"]


@pytest.fixture(scope="module")
def experts(models):
    """Two different tiny WAN21 models: the high-noise expert (the tests' wan21) and a low-noise one."""
    return models["wan21"], wan_models.tiny_wan21_model(seed=11)


def test_wan_a14b_both_experts_carry_the_edit_and_the_source_is_plain_two_expert_sampling(experts, clip):
    high, low = experts
    positive, lat, edit = prompts(clip, TARGETS["replace"], 2)
    negative = _encode(clip, "")
    plain = two_experts(high, low, positive, negative, lat)
    edited = two_experts(control(high, edit)[0], control(low, edit)[0], positive, negative, lat)
    for stage, (out, ref) in enumerate(zip(edited, plain)):  # after each expert
        # the latent after the first expert still holds most of the noise (its scale sets the
        # relative change): the source is bit-equal here, so a 10x tighter roundoff bar holds
        changes = assert_edit_moves(out, ref, min_relative=100 * 1e-6, tol=1e-6)
        print(f"wan A14B after expert {stage + 1}: edited item moved by {changes[1]:.3g} relative, "
              f"source {changes[0]:.1e}")
    # the low-noise expert's own control matters: without it the final edit is another one
    high_only = two_experts(control(high, edit)[0], low, positive, negative, lat)[1]
    assert_same(high_only[0], plain[1][0])
    moved = relative_change(edited[1][1], high_only[1])
    print(f"wan A14B: the low-noise expert's control moves the final edit by {moved:.3g} relative")
    assert moved > MIN_EDIT_CHANGE


def test_wan_a14b_inversion_is_one_expert_and_the_other_is_refused_by_name(experts, clip):
    """An inversion made with one model (no model_low_noise) belongs to that model alone: it can walk
    the whole schedule in two KSamplerAdvanced segments (exact), the other expert is refused, never
    silently wrong. Inversions over both experts: tests/test_family_wan_experts.py."""
    from comfyui_prompt_edit.base.errors import PromptEditError
    from harness.inversion_runs import rel_err

    high, low = experts
    positive, negative = _encode(clip, SOURCE), _encode(clip, "")
    with torch.inference_mode():
        noisy, inversion = node("PromptEditInvertImage").invert(
            low, positive, negative, {"samples": photo("wan21", 2)}, "direct", "simple", STEPS, CFG, 0, 1e-5)
    with pytest.raises(PromptEditError, match="made with another model"):
        node("PromptEditApplyInversion").apply(high, inversion)
    patched = node("PromptEditApplyInversion").apply(low, inversion)[0]
    ksampler = node("KSamplerAdvanced")
    with torch.inference_mode():
        first = ksampler.sample(patched, "disable", 0, STEPS, CFG, "euler", "simple", positive, negative, noisy,
                                0, SWITCH, "enable")[0]
        out = ksampler.sample(patched, "disable", 0, STEPS, CFG, "euler", "simple", positive, negative, first,
                              SWITCH, 10000, "disable")[0]["samples"]
    error = rel_err(out, photo("wan21", 2))
    print(f"wan A14B one-expert direct inversion in two segments: relative error {error:.2e}")
    assert error < 1e-4
