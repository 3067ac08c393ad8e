"""P2P Prompts (Qwen-Image-Edit): the instruction's words after the input pictures' vision columns.

Qwen-Image-Edit reads its input pictures inside the prompt: Qwen2.5-VL's vision tower turns each
into a number of conditioning columns that depends on the picture's size, and the user's words
follow them. The tiny Qwen2.5-VL here has a real (32-wide, one-block) vision tower of ComfyUI's own
class behind the real processor, so the column counts are the released model's. The words' columns
are checked against what the encoder itself read (its input embeddings: a word's column holds its
token's embedding, a vision column the tower's output), for two picture sizes and both layouts;
the conditioning equals the stock TextEncodeQwenImageEdit(Plus) nodes'; and P2P Local Blend's words
select those columns of the maps of a tiny Qwen-Image edit through the stock sampler.
"""

from __future__ import annotations

import pytest
import torch

from harness import qwen_image_models as qwen
from harness.comfyui import run_node
from harness.text_encoders import tiny_qwen_image_clip

pytestmark = pytest.mark.comfy

PLUS, EDIT = "edit plus (2509, 2511)", "edit"
SIZES = ((64, 96), (160, 112))  # height, width: different vision column counts in both layouts
SOURCE, TARGET = "make the cat sleep on the sofa", "put a red hat on the cat"


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name if name == "KSamplerAdvanced" else f"PromptEdit{name}"]()


@pytest.fixture(scope="module")
def clip():
    return tiny_qwen_image_clip()


def picture(height: int, width: int, seed: int = 3) -> torch.Tensor:
    return torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(seed))


class EncoderInputs:
    """What the Qwen2.5-VL read on each call: its input embeddings and its vision tower's outputs."""

    def __init__(self, clip):
        transformer = clip.cond_stage_model.qwen25_7b.transformer
        self.embedding = transformer.model.embed_tokens.weight
        self.vision: list[torch.Tensor] = []
        self.embeds: list[torch.Tensor] = []
        self.hooks = [transformer.register_forward_pre_hook(self._read_embeds, with_kwargs=True),
                      transformer.visual.register_forward_hook(lambda module, args, out: self.vision.append(out))]

    def _read_embeds(self, module, args, kwargs):
        self.embeds.append(kwargs["embeds"][0].clone())

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()


def encode(clip, layout: str, size: tuple[int, int], prompts=(SOURCE, TARGET)):
    """(positive, the P2P edit, the source prompt's input embeddings, its vision tower outputs) of
    P2P Prompts (Qwen-Image-Edit); the source is encoded first."""
    reader = EncoderInputs(clip)
    try:
        with torch.inference_mode():
            positive, _, edit = node("P2PPromptsQwenImageEdit").build(
                clip, {"samples": qwen.latent(1)}, prompts[0], "\n".join(prompts[1:]), layout, image1=picture(*size))
        return positive, edit, reader.embeds[0], reader.vision[0].clone()
    finally:
        reader.close()


@pytest.mark.parametrize("layout", [PLUS, EDIT])
def test_qwen_image_edit_words_lie_after_the_pictures_vision_columns_for_two_sizes(clip, layout):
    from comfyui_prompt_edit.attention.clip_tokens import IMAGE

    first_word = []
    for size in SIZES:
        # the source is the longest prompt: unpadded
        positive, edit, embeds, vision = encode(clip, layout, size, prompts=(SOURCE, "a cat"))
        source = edit.source
        cut = embeds.shape[0] - positive[0][0].shape[1]  # the template columns the encoder drops
        image_columns = [c for c, s in enumerate(source.token_strings) if s == IMAGE]
        assert len(image_columns) == vision.shape[0]  # the tower's count, from the real processor
        assert torch.equal(embeds[[c + cut for c in image_columns]], vision)
        sub = clip.tokenizer.qwen25_7b.tokenizer
        words = SOURCE.split()
        assert [w.text for w in source.words] == words
        for i, word in enumerate(source.words):
            ids = sub(word.text if i == 0 else " " + word.text)["input_ids"]
            assert torch.equal(embeds[[c + cut for c in word.columns]], embeddings_of(clip, ids)), word
        assert source.words[0].columns[0] > image_columns[-1]
        first_word.append(source.words[0].columns[0])
    print(f"\n{layout}: first word at column {first_word[0]} ({SIZES[0]}) and {first_word[1]} ({SIZES[1]})")
    assert first_word[0] != first_word[1]


def embeddings_of(clip, ids: list[int]) -> torch.Tensor:
    return clip.cond_stage_model.qwen25_7b.transformer.model.embed_tokens.weight[ids]


@pytest.mark.parametrize("layout,stock", [(PLUS, "TextEncodeQwenImageEditPlus"), (EDIT, "TextEncodeQwenImageEdit")])
def test_qwen_image_edit_conditioning_is_the_stock_nodes(clip, layout, stock):
    import nodes

    size = SIZES[1]
    positive, _, _, _ = encode(clip, layout, size, prompts=(SOURCE, "a cat"))
    with torch.inference_mode():
        expected = run_node(nodes.NODE_CLASS_MAPPINGS[stock], clip, SOURCE, None, picture(*size))
    assert torch.equal(positive[0][0][:1], expected[0][0])


def test_qwen_image_edit_reference_latents_are_the_stock_nodes():
    import nodes

    from harness.tiny_models import tiny_vae

    clip, vae = tiny_qwen_image_clip(), tiny_vae()
    images = [picture(48, 80, seed=1), picture(64, 64, seed=2)]
    with torch.inference_mode():
        positive = node("P2PPromptsQwenImageEdit").build(clip, {"samples": qwen.latent(1)}, SOURCE, TARGET, PLUS,
                                                         vae, images[0], None, images[1])[0]
        expected = run_node(nodes.NODE_CLASS_MAPPINGS["TextEncodeQwenImageEditPlus"], clip, SOURCE, vae, images[0],
                            None, images[1])
    ours, theirs = positive[0][1]["reference_latents"], expected[0][1]["reference_latents"]
    assert len(ours) == len(theirs) == 2 and all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_qwen_image_edit_local_blend_reads_the_words_columns_of_the_maps(clip, monkeypatch):
    from comfyui_prompt_edit.attention import local_blend

    positive, edit, embeds, _ = encode(clip, PLUS, SIZES[0])
    blended = node("P2PLocalBlend").blend(edit, clip, "cat", "hat", 0.3, 0.0)[0]
    read = []
    real_mask = local_blend.blend_mask

    def reading(maps, selectors, latent_hw, threshold):  # the real mask; the columns it selects kept
        read.append((maps.shape[-1], selectors.clone()))
        return real_mask(maps, selectors, latent_hw, threshold)

    monkeypatch.setattr(local_blend, "blend_mask", reading)
    model = qwen.tiny_qwen_image_model()
    edited, handle = node("P2PAttentionControl").apply(model, blended, "replace", 0.0, 0.8, 0.4, "coarse", qk_end=0.5,
                                                       mmdit_mechanism="qk")
    negative = [[torch.zeros_like(positive[0][0][:1]), {}]]
    with torch.inference_mode():
        out = node("KSamplerAdvanced").sample(edited, "enable", 0, 4, 2.5, "euler", "simple", positive, negative,
                                              {"samples": qwen.latent(2)}, 0, 10000, "disable")[0]["samples"]
    assert torch.isfinite(out).all() and read
    recorded = handle.recorder.store.columns  # the conditioning columns that have maps (words and ends)
    count, selectors = read[-1]
    assert count == len(recorded)
    print(f"\nrecorded columns {recorded}, selectors {selectors.tolist()}")
    source_cat = next(w.columns for w in edit.source.words if w.text == "cat")
    target_words = {w.text: w.columns for w in edit.targets[0].words}
    assert source_cat[0] > positive[0][0].shape[1] - 16  # after the picture's vision columns
    assert {recorded[i] for i in torch.nonzero(selectors[0]).flatten().tolist()} == set(source_cat)
    assert {recorded[i] for i in torch.nonzero(selectors[1]).flatten().tolist()} == set(target_words["hat"])
