"""Keep Outside Mask with an instruction editor's layout on tiny Qwen-Image (Qwen-Image-Edit: the
photo also enters as a reference latent, its tokens after the image's), through the stock
KSamplerAdvanced at the model's real CFG: outside the mask the edit's final latent is the inverted
photo's, inside it is not; an empty mask gives the photo back; two rounds keep the outside; the
automatic mask keeps what it leaves out; the qk edit never touches the reference tokens."""

from __future__ import annotations

import pytest
import torch

from harness import qwen_image_models as qwen
from harness.attention_capture import with_capture
from harness.inversion_runs import rel_err

pytestmark = pytest.mark.comfy

STEPS, CFG, SIZE = 6, 2.5, 16
EXACT = 1e-5  # relative error of a kept region: float32 roundoff
MOVED = 1e-3  # an edited region differs by well over it


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name if name == "KSamplerAdvanced" else f"PromptEdit{name}"]()


@pytest.fixture(scope="module")
def model():
    return qwen.tiny_qwen_image_model()


def photo_latent(seed: int = 5) -> torch.Tensor:
    return torch.randn(1, qwen.QWEN_LATENT_CHANNELS, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def with_reference(conditioning: list, reference: torch.Tensor) -> list:
    """The conditioning as ReferenceLatent / TextEncodeQwenImageEdit give it: the photo as a reference latent."""
    return [[c, {**extra, "reference_latents": [reference]}] for c, extra in conditioning]


def instruction_batch(reference: torch.Tensor) -> list:
    """[source, edit]: two different instructions (random contexts) with the photo as reference."""
    contexts = [qwen.random_conditioning(seed=s)[0][0] for s in (1, 2)]
    return with_reference([[torch.cat(contexts), {}]], reference)


def negative(reference: torch.Tensor) -> list:
    return with_reference(qwen.random_conditioning(seed=99), reference)


def invert(model, photo: torch.Tensor):
    positive = with_reference(qwen.random_conditioning(seed=1), photo)
    with torch.inference_mode():
        return node("InvertImage").invert(model, positive, negative(photo), {"samples": photo}, "direct", "simple",
                                          STEPS, CFG, 0, 1e-5)


def left_half() -> torch.Tensor:
    """A MASK in pixels (8 per latent cell) whose left half is edited."""
    mask = torch.zeros(1, SIZE * 8, SIZE * 8)
    mask[..., : SIZE * 4] = 1
    return mask


def edit(model, photo: torch.Tensor, mask_from: str = "mask", mask: torch.Tensor | None = None, **kw):
    """(the sampled [source, edit] latent, the Keep Outside Mask state) of one round on ``photo``."""
    noisy, inversion = invert(model, photo)
    applied = node("ApplyInversion").apply(model, inversion)[0]
    settings = {"threshold": 0.3, "auto_steps": 0.34, "dilation": 0, "feathering": 0, **kw}
    kept, latent, keep = node("KeepOutsideMask").apply(applied, inversion, noisy, mask_from, mask=mask, **settings)
    assert latent["samples"].shape[0] == 2
    with torch.inference_mode():
        out = node("KSamplerAdvanced").sample(kept, "disable", 0, STEPS, CFG, "euler", "simple", instruction_batch(photo),
                                              negative(photo), latent, 0, 10000, "disable")[0]["samples"]
    return out, keep


def test_outside_the_mask_the_edit_is_the_photo_and_inside_it_is_not(model):
    photo = photo_latent()
    out, keep = edit(model, photo, mask=left_half())
    assert keep.mask.shape == (1, 1, SIZE, SIZE) and keep.mask[..., : SIZE // 2].min() == 1
    outside, inside = (slice(SIZE // 2, None), slice(None, SIZE // 2))
    error = rel_err(out[1:, ..., outside], photo[..., outside])
    moved = rel_err(out[1:, ..., inside], photo[..., inside])
    print(f"\nqwen_image keep outside at cfg {CFG}: outside relative error {error:.2e}, inside {moved:.2e}")
    assert error < EXACT and moved > MOVED
    assert rel_err(out[:1], photo) < EXACT  # the source is the photo (Apply Inversion)


def latent_picture(latent: torch.Tensor, low: float, high: float) -> "np.ndarray":
    """Channels 0-2 of a Qwen-Image latent [1, 16, 1, h, w] as an RGB picture (8 pixels per cell)."""
    import numpy as np

    rgb = ((latent[0, :3, 0] - low) / (high - low)).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.repeat(np.repeat(np.round(rgb * 255).astype(np.uint8), 8, 0), 8, 1)


def test_the_before_after_picture_differs_nowhere_outside_the_mask(model, tmp_path):
    """The README's picture (docs/screenshots/keep_outside_qwen_image.png with
    PROMPT_EDIT_UPDATE_PICTURES=1): the photo, the edit, their difference (x4), the mask; the
    difference image is exactly zero outside the mask."""
    import os

    import numpy as np
    from PIL import Image, ImageDraw

    from harness import pack

    photo = photo_latent()
    out, keep = edit(model, photo, mask=left_half(), dilation=1)
    low, high = float(photo[0, :3].min()), float(photo[0, :3].max())
    before, after = latent_picture(photo, low, high), latent_picture(out[1:], low, high)
    difference = np.clip(np.abs(after.astype(int) - before.astype(int)) * 4, 0, 255).astype(np.uint8)
    mask = np.repeat(np.repeat((keep.mask[0, 0].numpy() * 255).astype(np.uint8), 8, 0), 8, 1)
    assert not difference[mask == 0].any(), "the difference image is not zero outside the mask"
    assert difference[mask == 255].any()
    panels = [before, after, difference, np.stack([mask] * 3, -1)]
    labels = ["photo (latent)", "edit, kept outside", "difference x4", "mask (white = edit)"]
    side, gap, label = before.shape[0], 8, 18
    canvas = Image.new("RGB", (4 * side + 3 * gap, side + label), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (panel, text) in enumerate(zip(panels, labels)):
        canvas.paste(Image.fromarray(panel), (i * (side + gap), label))
        draw.text((i * (side + gap) + 2, 3), text, fill="black")
    folder = pack.ROOT / "docs" / "screenshots" if os.environ.get("PROMPT_EDIT_UPDATE_PICTURES") == "1" else tmp_path
    canvas.save(folder / "keep_outside_qwen_image.png", optimize=True)


def test_an_empty_mask_gives_the_photo_back(model):
    photo = photo_latent()
    out, _ = edit(model, photo, mask=torch.zeros(1, SIZE * 8, SIZE * 8))
    assert rel_err(out[1:], photo) < EXACT


def test_two_rounds_keep_everything_outside_both_masks(model):
    photo = photo_latent()
    first, _ = edit(model, photo, mask=left_half())
    top = torch.zeros(1, SIZE * 8, SIZE * 8)
    top[:, : SIZE * 4] = 1
    second, _ = edit(model, first[1:], mask=top)
    untouched = (slice(SIZE // 2, None), slice(SIZE // 2, None))  # outside the left half and the top half
    error = rel_err(second[1:, ..., untouched[0], untouched[1]], photo[..., untouched[0], untouched[1]])
    print(f"\nqwen_image two rounds: outside both masks, relative error {error:.2e}")
    assert error < EXACT
    assert rel_err(second[1:, ..., : SIZE // 2, SIZE // 2:], first[1:, ..., : SIZE // 2, SIZE // 2:]) > MOVED


def test_the_automatic_mask_keeps_what_it_leaves_out(model):
    photo = photo_latent()
    out, keep = edit(model, photo, "auto", threshold=0.5)
    mask = keep.mask[0, 0]
    assert 0 < int(mask.sum()) < mask.numel(), "the automatic mask should edit part of the picture"
    outside = (mask == 0).expand_as(photo[0, 0, 0])
    error = float((out[1, :, 0][:, outside] - photo[0, :, 0][:, outside]).norm() / photo[0, :, 0][:, outside].norm())
    print(f"\nqwen_image automatic mask: {int(mask.sum())} of {mask.numel()} cells edited; outside relative error {error:.2e}")
    assert error < EXACT


def test_keep_outside_mask_refuses_what_cannot_keep_the_outside(model):
    from comfyui_prompt_edit.base.errors import PromptEditError

    photo = photo_latent()
    positive = with_reference(qwen.random_conditioning(seed=1), photo)
    with torch.inference_mode():
        noisy, ddim = node("InvertImage").invert(model, positive, negative(photo), {"samples": photo}, "ddim", "simple",
                                                 STEPS, CFG, 0, 1e-5)
    with pytest.raises(PromptEditError, match="method 'direct'"):
        node("KeepOutsideMask").apply(model, ddim, noisy, "mask", 0.3, 0.2, 0, 0, mask=left_half())
    noisy, inversion = invert(model, photo)
    with pytest.raises(PromptEditError, match="no MASK is connected"):
        node("KeepOutsideMask").apply(model, inversion, noisy, "mask", 0.3, 0.2, 0, 0)
    kept, latent, _ = node("KeepOutsideMask").apply(model, inversion, noisy, "mask", 0.3, 0.2, 0, 0, mask=left_half())
    with pytest.raises(Exception, match="did not go through 'Apply Inversion'"):
        with torch.inference_mode():
            node("KSamplerAdvanced").sample(kept, "disable", 0, STEPS, CFG, "euler", "simple", instruction_batch(photo),
                                            negative(photo), latent, 0, 10000, "disable")
    after = node("ApplyInversion").apply(kept, inversion)[0]  # a post-CFG function after it
    with pytest.raises(Exception, match="apply Keep Outside Mask last"):
        with torch.inference_mode():
            node("KSamplerAdvanced").sample(after, "disable", 0, STEPS, CFG, "euler", "simple", instruction_batch(photo),
                                            negative(photo), latent, 0, 10000, "disable")


def test_the_composite_puts_the_photos_pixels_back_outside_and_shows_the_mask(model):
    photo = photo_latent()
    _, keep = edit(model, photo, mask=left_half(), feathering=1)
    pixels = torch.rand(1, SIZE * 8, SIZE * 8, 3, generator=torch.Generator().manual_seed(3))
    decoded = torch.rand(2, SIZE * 8, SIZE * 8, 3, generator=torch.Generator().manual_seed(4))  # the VAE moved them
    images, masks, preview = node("KeepMaskComposite").composite(keep, decoded, pixels)
    assert masks.shape == (2, SIZE * 8, SIZE * 8) and masks[0].max() == 0 and preview.shape == decoded.shape
    outside = masks[1] == 0
    assert outside.any() and torch.equal(images[1][outside], pixels[0][outside])  # byte for byte
    assert torch.equal(images[0], pixels[0]) and torch.equal(images[1][masks[1] == 1], decoded[1][masks[1] == 1])


def test_the_qk_edit_with_a_reference_never_touches_the_reference_tokens(model):
    """Qwen-Image-Edit's joint sequence is [text, image, reference]: the source's image queries and
    keys go into the edit's image tokens only; each item keeps its own reference tokens."""
    from comfyui_prompt_edit.attention.edit_spec import QWEN_IMAGE_ENCODER, P2PEdit
    from comfyui_prompt_edit.attention.tokens import END, PromptTokens, Word

    def prompt(*words):
        strings = (*words, END) + ("<|endoftext|>",) * (7 - len(words) - 1)
        return PromptTokens(" ".join(words), strings, tuple(Word(w, (i,)) for i, w in enumerate(words)), 7)

    p2p = P2PEdit(prompt("a", "red", "cat"), (prompt("a", "red", "dog"),), encoder=QWEN_IMAGE_ENCODER)
    captured, capture = with_capture(model)
    controlled = node("P2PAttentionControl").apply(captured, p2p, "replace", 0.0, 0.8, 0.4, "coarse", qk_end=1.0,
                                                   mmdit_mechanism="qk")[0]
    reference = photo_latent(6)
    latent = {"samples": torch.zeros(2, qwen.QWEN_LATENT_CHANNELS, 1, SIZE, SIZE)}
    with torch.inference_mode():
        node("KSamplerAdvanced").sample(controlled, "enable", 7, 3, CFG, "euler", "simple", instruction_batch(reference),
                                        negative(reference), latent, 0, 10000, "disable")
    text, image = 7, (SIZE // 2) ** 2
    joint = [c for c in capture.calls if c.length == text + 2 * image and 0 in c.cond_or_uncond]
    assert joint, f"no joint attention with the reference tokens: {sorted({(c.length, c.cond_or_uncond) for c in capture.calls})}"
    differ = []
    for call in joint:
        rows = 2 * call.cond_or_uncond.index(0)  # the conditional chunk: [source, edit]
        source, edited = call.q.narrow(0, rows, 1), call.q.narrow(0, rows + 1, 1)

        def part(x, start):
            return x.narrow(call.token_axis, start, image)

        assert torch.equal(part(edited, text), part(source, text))  # the edit holds the source's image queries
        differ.append(not torch.equal(part(edited, text + image), part(source, text + image)))
    # the reference tokens are each item's own: equal in the first block (the same photo), different
    # in the second once the texts have mixed into them (copied from the source, they would stay equal)
    assert sum(differ) >= len(joint) // 2


def test_qwen_image_keep_outside_holds_under_every_reference_method_of_the_stock_node(model, monkeypatch):
    """FluxKontextMultiReferenceLatentMethod (Edit Model Reference Method) on every conditioning:
    each of the host's methods (0.33.0's index_timestep_zero runs the reference at timestep 0)."""
    import sys

    import nodes

    from harness.comfyui import run_node

    method_node = nodes.NODE_CLASS_MAPPINGS["FluxKontextMultiReferenceLatentMethod"]
    methods = method_node.GET_SCHEMA().inputs[1].options
    plain = with_reference
    photo = photo_latent()
    for method in methods:
        monkeypatch.setattr(sys.modules[__name__], "with_reference",
                            lambda conditioning, reference, m=method: run_node(method_node, plain(conditioning, reference), m))
        out, _ = edit(model, photo, mask=left_half())
        outside, inside = (slice(SIZE // 2, None), slice(None, SIZE // 2))
        error, moved = rel_err(out[1:, ..., outside], photo[..., outside]), rel_err(out[1:, ..., inside], photo[..., inside])
        print(f"\nqwen_image reference method {method}: outside {error:.2e}, inside {moved:.2e}")
        assert error < EXACT and moved > MOVED and rel_err(out[:1], photo) < EXACT, method
    assert "index" in methods
