"""Prompts of the LLM text encoders (Qwen-Image, HunyuanImage 2.1, Z-Image, Flux.2 klein and dev, Lumina 2)
and of Chroma's T5: the user's words at their CONDITIONING columns, one-length encoding (item 0 =
source), and 'P2P Prompts' end to end, with tiny encoders built through ComfyUI's own classes."""

from __future__ import annotations

import pytest
import torch

from comfyui_prompt_edit.attention.tokens import PAD, group_bpe_words

# -- byte-level BPE words (no ComfyUI) ----------------------------------------------------------------


def test_bpe_words_begin_at_a_space_and_split_punctuation():
    pieces = ["a", "Ġ(", "red", ":", "1", ".", "3", ")", "Ġcat", "Ġte", "ddy", "Ġ", "2"]
    words = [(w.text, w.columns) for w in group_bpe_words(pieces)]
    assert words == [("a", (0,)), ("(", (1,)), ("red", (2,)), (":", (3,)), ("1", (4,)), (".", (5,)), ("3", (6,)),
                     (")", (7,)), ("cat", (8,)), ("teddy", (9, 10)), ("2", (11, 12))]


def test_bpe_words_decode_a_character_split_over_two_pieces():
    cat = "猫".encode("utf-8")  # three bytes; byte-level BPE may cut them over pieces
    alphabet = {b: ch for ch, b in __import__("comfyui_prompt_edit.attention.tokens", fromlist=["_BYTE_OF"])
                ._BYTE_OF.items()}
    pieces = ["Ġbig", "Ġ" + alphabet[cat[0]], alphabet[cat[1]] + alphabet[cat[2]]]
    assert [(w.text, w.columns) for w in group_bpe_words(pieces)] == [("big", (0,)), ("猫", (1, 2))]


# -- with ComfyUI's tokenizers and tiny encoders ------------------------------------------------------


ADDED_IN_0_33 = {"z_image": ("z_image", "ZImageTokenizer"), "flux2_klein": ("flux", "KleinTokenizer"),
                 "flux2_dev": ("flux", "Flux2Tokenizer")}
"""Text encoders that ComfyUI 0.3.64 lacks (module, tokenizer class): their tests check the absence there."""


def host_has(name: str) -> bool:
    import importlib

    if name not in ADDED_IN_0_33:
        return True
    module, cls = ADDED_IN_0_33[name]
    try:
        return hasattr(importlib.import_module(f"comfy.text_encoders.{module}"), cls)
    except ImportError:
        return False


class Clips(dict):
    """The tiny text encoders, each built when a test first asks for it (once per module)."""

    def __missing__(self, name):
        from harness import text_encoders

        self[name] = getattr(text_encoders, f"tiny_{name}_clip")()
        return self[name]


@pytest.fixture(scope="module")
def clips():
    return Clips()


def new_on_this_host(name: str) -> bool:
    """Whether ``name``'s encoder exists on this ComfyUI; where it does not (0.3.64: Z-Image, Flux.2),
    checks that it is only the host's lack: the class is missing and the harness cannot build one."""
    if host_has(name):
        return True
    from harness import text_encoders

    with pytest.raises((ImportError, AttributeError)):
        getattr(text_encoders, f"tiny_{name}_clip")()
    return False


@pytest.fixture(scope="module")
def hunyuan_clip():
    from harness import text_encoders

    return text_encoders.tiny_hunyuan_image_clip()


def words(prompt):
    return [(w.text, w.columns) for w in prompt.words]


LITERAL_WEIGHT = [("a", 0), ("(", 1), ("red", 2), (":", 3), ("1", 4), (".", 5), ("3", 6), (")", 7), ("cat", 8)]


def at(offset):
    return [(t, (c + offset,)) for t, c in LITERAL_WEIGHT]


@pytest.mark.comfy
def test_z_image_words_follow_the_three_template_columns_and_weights_are_literal(clips):
    from comfyui_prompt_edit.attention.clip_tokens import clip_words, encode_prompts

    if not new_on_this_host("z_image"):
        return
    clip = clips["z_image"]
    positive, (source, target), encoder = encode_prompts(clip, ["a (red:1.3) cat", "a blue dog"])
    cond = positive[0][0]
    assert encoder == "z_image" and cond.shape == (2, 3 + 9 + 5, 32)
    assert words(source) == at(3)  # "<|im_start|>", "user", "\n" stay in Z-Image's context
    assert source.token_labels()[:3] == ["<|im_start|>", "user", "_"] and source.token_labels()[12] == "<|im_end|>"
    assert words(target) == [("a", (3,)), ("blue", (4,)), ("dog", (5,))]
    assert target.token_strings[-6:] == (PAD,) * 6 and target.num_columns == cond.shape[1]
    assert source.find(clip_words(clip, "red")) == [(5,)] and clip_words(clip, "(red:1.3)") == ("(", "red", ":", "1",
                                                                                                 ".", "3", ")")
    alone = clip.encode_from_tokens(clip.tokenize("a (red:1.3) cat"), return_dict=True)["cond"]
    assert torch.equal(cond[:1], alone)  # item 0 = the source as CLIPTextEncode gives it
    short = clip.encode_from_tokens(clip.tokenize("a blue dog"), return_dict=True)["cond"]
    torch.testing.assert_close(cond[1:, :short.shape[1]], short)  # tail pads leave a causal encoder's columns


@pytest.mark.comfy
def test_qwen_image_column_0_is_the_first_user_token_and_pads_are_masked(clips):
    from comfyui_prompt_edit.attention.clip_tokens import clip_words, encode_prompts

    clip = clips["qwen_image"]
    positive, (source, target), encoder = encode_prompts(clip, ["a (red:1.3) cat", "a blue dog on a mat"])
    cond, extras = positive[0]
    assert encoder == "qwen_image" and cond.shape[1] == 9 + 5 == source.num_columns == target.num_columns
    assert words(source) == at(0)
    assert source.token_labels()[9:] == ["<|im_end|>", "_", "<|im_start|>", "assistant", "_"]
    assert target.token_strings[11:] == (PAD,) * 3
    assert extras["attention_mask"].tolist() == [[1] * 14, [1] * 11 + [0] * 3]
    assert target.find(clip_words(clip, "on a mat")) == [(3, 4, 5)]
    alone = clip.encode_from_tokens(clip.tokenize("a (red:1.3) cat"), return_dict=True)["cond"]
    assert torch.equal(cond[:1], alone)


@pytest.mark.comfy
def test_flux2_klein_words_sit_before_the_right_padding_to_512(clips):
    from comfyui_prompt_edit.attention.clip_tokens import encode_prompts

    if not new_on_this_host("flux2_klein"):
        return
    clip = clips["flux2_klein"]
    positive, (source, target), encoder = encode_prompts(clip, ["a (red:1.3) cat", "a blue dog"])
    assert encoder == "flux2" and positive[0][0].shape == (2, 512, 96) and source.num_columns == 512
    assert words(source) == at(3)
    labels = source.token_labels()
    assert labels[12:21] == ["<|im_end|>", "_", "<|im_start|>", "assistant", "_", "<think>", "_", "</think>", "_"]
    assert source.token_strings[21:] == (PAD,) * 491  # 3 prefix + 9 user + 9 suffix + 491 pads


@pytest.mark.comfy
def test_flux2_dev_words_sit_at_the_right_end_after_the_left_padding_to_512(clips):
    """Mistral's Tekken BPE (tiny vocabulary), weights literal; the model left-pads the context with
    zeros to 512 columns, so the pack reads the words there: [/INST] is column 511."""
    from comfyui_prompt_edit.attention.clip_tokens import clip_words, encode_prompts

    if not new_on_this_host("flux2_dev"):
        return
    clip = clips["flux2_dev"]
    positive, (source, target), encoder = encode_prompts(clip, ["a (red:1.3) cat", "a blue dog"])
    cond = positive[0][0]
    assert encoder == "flux2" and cond.shape == (2, 512, 96) and source.num_columns == target.num_columns == 512
    assert words(source) == at(502)
    assert source.token_labels()[501] == "[INST]" and source.token_labels()[511] == "[/INST]"
    assert words(target) == [("a", (508,)), ("blue", (509,)), ("dog", (510,))]
    assert source.find(clip_words(clip, "red")) == [(504,)]
    alone = clip.encode_from_tokens(clip.tokenize("a (red:1.3) cat"), return_dict=True)["cond"]
    pads = 512 - alone.shape[1]
    assert torch.equal(cond[:1, pads:], alone) and not cond[:1, :pads].any()  # item 0 = the source, zeros before it


@pytest.mark.comfy
def test_hunyuan_image_byt5_columns_of_quoted_text_follow_the_qwen_ones(hunyuan_clip):
    from comfyui_prompt_edit.attention.clip_tokens import clip_words, encode_prompts
    from comfyui_prompt_edit.attention.errors import P2PInputError

    clip = hunyuan_clip
    positive, (source, target), encoder = encode_prompts(clip, ['a sign "OPEN"', 'a red sign "SHUT"'])
    cond, extras = positive[0]
    qwen = cond.shape[1]
    assert encoder == "hunyuan_image" and target.token_labels()[qwen - 1] == "<|im_end|>"  # no assistant suffix
    assert [w.text for w in target.words if w.columns[0] < qwen] == ["a", "red", "sign", '"', "SHUT", '"']
    byt5 = extras["conditioning_byt5small"]
    assert byt5.shape == (2, len('Text "OPEN". ') + 1, 1472)
    assert source.num_columns == target.num_columns == qwen + byt5.shape[1]
    hits = source.find(clip_words(clip, "OPEN"))
    assert len(hits) == 2 and hits[0][-1] < qwen <= hits[1][0]  # in the Qwen columns, then in ByT5's
    assert "".join(source.token_labels()[qwen:qwen + 4]) == "Text"
    with pytest.raises(P2PInputError, match="quote text"):
        encode_prompts(clip, ['a sign "OPEN"', "a red sign"])


@pytest.mark.comfy
def test_lumina2_words_follow_the_system_prompt(clips):
    from comfyui_prompt_edit.attention.clip_tokens import LUMINA2_SYSTEM_PROMPT, clip_words, encode_prompts

    clip = clips["lumina2"]
    positive, (source, target), encoder = encode_prompts(clip, ["a photo of a cat", "a photo of a red dog"])
    cond = positive[0][0]
    assert encoder == "lumina2" and source.num_columns == target.num_columns == cond.shape[1]
    first = source.words[0].columns[0]
    system = clip.tokenize(LUMINA2_SYSTEM_PROMPT.format("").rstrip())["gemma2_2b"][0]
    assert first == len(system)  # <bos> + the system prompt's pieces, then the user's
    assert [w.text for w in source.words] == ["a", "photo", "of", "a", "cat"]
    assert target.find(clip_words(clip, "red dog"))[0][0] > first
    alone = clip.encode_from_tokens(clip.tokenize(LUMINA2_SYSTEM_PROMPT.format("a photo of a cat")),
                                    return_dict=True)["cond"]
    torch.testing.assert_close(cond[:1, :alone.shape[1]], alone)


@pytest.mark.comfy
def test_chroma_t5_prompts_take_the_t5_path(clips):
    from comfyui_prompt_edit.attention.clip_tokens import encode_prompts

    positive, (source, target), encoder = encode_prompts(clips["chroma"], ["a (red:1.3) cat", "a blue dog on a mat"])
    assert encoder == "t5" and positive[0][0].shape == (2, 9, 32) == (2, source.num_columns, 32)
    assert words(source) == [("a", (0, 1)), ("red", (2,)), ("cat", (3,))]  # weights parsed, as T5 does
    assert [w.text for w in target.words] == ["a", "blue", "dog", "on", "a", "mat"]


@pytest.mark.comfy
@pytest.mark.parametrize("name", ["z_image", "flux2_klein", "flux2_dev", "qwen_image", "lumina2", "chroma"])
def test_p2p_prompts_node_encodes_the_new_families(name, clips):
    from comfyui_prompt_edit.nodes.p2p_prompts import P2PPrompts

    if not new_on_this_host(name):
        return
    latent = {"samples": torch.zeros(1, 16, 1, 8, 8)}
    positive, batch, edit = P2PPrompts().build(clips[name], latent, "a cat riding a bicycle",
                                               "a dog riding a bicycle\na cat riding a red bicycle")
    cond = positive[0][0]
    assert cond.shape[0] == 3 == batch["samples"].shape[0] == edit.batch_size
    assert edit.num_columns == cond.shape[1] and all(t.num_columns == cond.shape[1] for t in edit.targets)
    assert edit.encoder == {"flux2_klein": "flux2", "flux2_dev": "flux2", "chroma": "t5"}.get(name, name)
    assert edit.source.find(("bicycle",)) and edit.targets[1].find(("red",))
