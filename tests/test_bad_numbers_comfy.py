"""NaN and infinity are refused by every node, with a message naming the node and the input.

NaN passes ComfyUI's min / max widget checks (it compares false), so without the pack's own check a
NaN blend threshold silently removed the edit, a NaN scale blackened the images and a NaN latent was
inverted and saved. The cases are built from each node's INPUT_TYPES: a node added later is covered.
"""

from __future__ import annotations

import json
import math
import sys
import time
import urllib.request

import pytest
import torch

from harness import pack, workflows
from harness.comfyui import encode
from harness.inversion_runs import invert, node, reconstruct

pytestmark = pytest.mark.comfy

NON_FINITE = (math.nan, math.inf, -math.inf)
INVERSION, EMBEDDING_VAE = "NULL_TEXT_INVERSION", "EMBEDDING_VAE"
TENSOR_TYPES = ("IMAGE", "LATENT", "CONDITIONING", INVERSION, EMBEDDING_VAE)


def _pack_nodes() -> dict[str, type]:
    """The registered node classes (empty without ComfyUI: the tests are then skipped as comfy tests)."""
    return dict(getattr(sys.modules.get(pack.PACK), "NODE_CLASS_MAPPINGS", None) or {})


def _display_name(name: str) -> str:
    return sys.modules[pack.PACK].NODE_DISPLAY_NAME_MAPPINGS[name]


def _declared(cls: type) -> dict[str, tuple]:
    spec = cls.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def _inputs_of_type(kinds: tuple[str, ...]) -> list[tuple[str, str, str]]:
    return [(name, input_name, declared[0]) for name, cls in sorted(_pack_nodes().items())
            for input_name, declared in _declared(cls).items() if isinstance(declared[0], str) and declared[0] in kinds]


FLOAT_INPUTS = [(name, input_name) for name, input_name, _ in _inputs_of_type(("FLOAT",))]
TENSOR_INPUTS = _inputs_of_type(TENSOR_TYPES)


def _call_with(name: str, bad_input: str, bad_value):
    """Call node `name`'s FUNCTION as ComfyUI does (keyword arguments) with `bad_value` for
    `bad_input`, every other FLOAT at its default and every other input None: the refusal must come
    before the node's body touches anything (which would fail on None)."""
    cls = _pack_nodes()[name]
    arguments = {}
    for input_name, declared in _declared(cls).items():
        options = declared[1] if len(declared) > 1 else {}
        arguments[input_name] = options.get("default") if declared[0] == "FLOAT" else None
    arguments[bad_input] = bad_value
    return getattr(cls(), cls.FUNCTION)(**arguments)


def test_the_cases_cover_the_nodes_with_numbers():
    """The introspection finds the FLOAT inputs the issue was seen on (so the parametrised test
    below cannot pass by finding nothing)."""
    for case in [("PromptEditP2PLocalBlend", "threshold"), ("PromptEditP2PLocalBlend", "start"),
                 ("PromptEditStochasticEmbeddings", "scale"), ("PromptEditInvertImage", "guidance"),
                 ("PromptEditTrainEmbeddingVAE", "kl_weight"), ("PromptEditP2PAttentionMaps", "step_start"),
                 ("PromptEditP2PAttentionControl", "qk_end")]:
        assert case in FLOAT_INPUTS
    assert {node for node, _, _ in TENSOR_INPUTS} >= {
        "PromptEditInvertImage", "PromptEditTrainEmbeddingVAE", "PromptEditSaveInversion", "PromptEditApplyInversion",
        "PromptEditStochasticEmbeddings", "PromptEditEditMetrics", "PromptEditReconstructionMetrics"}


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name,input_name", FLOAT_INPUTS)
def test_every_float_input_refuses_non_finite_values(name, input_name, value):
    from comfyui_prompt_edit.base.errors import PromptEditError

    with pytest.raises(PromptEditError) as refused:
        _call_with(name, input_name, value)
    message = str(refused.value)
    assert message.startswith(f"{_display_name(name)}: {input_name} is {value}; give a finite number"), message


def _bad_value(kind: str):
    """A value of ComfyUI type `kind` holding one NaN among finite numbers."""
    from comfyui_prompt_edit.inversion.result import Inversion
    from comfyui_prompt_edit.vae_embed.checkpoint import TrainedEmbeddingVAE
    from comfyui_prompt_edit.vae_embed.model import EmbeddingVAE, EmbeddingVAEConfig

    tensor = torch.zeros(1, 4, 8, 8)
    tensor[0, 1, 2, 3] = math.nan
    if kind == "IMAGE":
        return tensor.permute(0, 2, 3, 1)[..., :3].contiguous()
    if kind == "LATENT":
        return {"samples": tensor}
    if kind == "CONDITIONING":
        return [[tensor.reshape(1, 16, 16), {}]]
    if kind == INVERSION:
        return Inversion(torch.zeros(2, 4, 8), torch.tensor([2.0, 1.0, 0.0]), tensor, torch.zeros(1, 4, 8, 8), 7.5,
                         "ddim", "ddim_uniform", 2, "")
    vae = EmbeddingVAE(EmbeddingVAEConfig("token_mlp", 4, 8))
    with torch.no_grad():
        next(vae.parameters()).view(-1)[0] = math.nan
    return TrainedEmbeddingVAE(vae, "null-text")


@pytest.mark.parametrize("name,input_name,kind", TENSOR_INPUTS)
def test_every_tensor_input_refuses_nan(name, input_name, kind):
    from comfyui_prompt_edit.base.errors import PromptEditError

    with pytest.raises(PromptEditError) as refused:
        _call_with(name, input_name, _bad_value(kind))
    message = str(refused.value)
    assert message.startswith(f"{_display_name(name)}: {input_name}") and "NaN or infinite" in message, message


def test_finite_inputs_pass(tiny_sd15_clip):
    """The guard lets finite values through to the node (here a real local blend)."""
    edit = node("PromptEditP2PPrompts").build(tiny_sd15_clip, {"samples": torch.zeros(1, 4, 8, 8)}, "a cat", "a dog")[2]
    (blended,) = node("PromptEditP2PLocalBlend").blend(edit, tiny_sd15_clip, "cat", "dog", 0.3, 0.2)
    assert blended.local_blend.threshold == 0.3 and blended.local_blend.start == 0.2


# ------------------------------------------------------------------------------------------------
# the probe's cases, with real models


@pytest.fixture
def photo(tiny_sd15, tiny_sd15_clip):
    return tiny_sd15, tiny_sd15_clip, torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("what", ["latent", "image"])
def test_a_nan_photo_is_refused_before_inverting(photo, tiny_vae, what):
    model, clip, latent = photo
    positive, negative = encode(clip, "a red square"), encode(clip, "")
    photo_input = {"latent": {"samples": latent.clone().index_fill_(3, torch.tensor([2]), math.nan)}} if what == "latent" \
        else {"image": torch.full((1, 64, 64, 3), math.nan), "vae": tiny_vae}
    with pytest.raises(ValueError, match=f"Invert Image \\(Null-Text\\): {what}: .* NaN or infinite"):
        node("PromptEditInvertImage").invert(model, positive, negative, method="ddim", steps=2, **photo_input)


def test_a_nan_inversion_is_neither_saved_nor_applied(photo, tmp_path):
    import folder_paths

    model, clip, latent = photo
    _, _, _, inversion = invert(model, clip, latent, "ddim", steps=2)
    inversion.unconds[1, 0, 0] = math.nan
    folder_paths.add_model_folder_path("inversions", str(tmp_path), is_default=True)
    with pytest.raises(ValueError, match=r"Save Inversion: inversion \(its unconds\): 1 of its .* NaN or infinite"):
        node("PromptEditSaveInversion").save(inversion, "photo")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"Apply Inversion: inversion \(its unconds\)"):
        node("PromptEditApplyInversion").apply(model, inversion)


def test_a_nan_embedding_is_refused_before_training(photo):
    model, clip, latent = photo
    positive, negative = encode(clip, "a red square"), encode(clip, "")
    negative[0][0][0, 3, 5] = math.nan
    with pytest.raises(ValueError, match="Train Embedding VAE \\(Null-Text\\): negative: 1 of its .* NaN or infinite"):
        node("PromptEditTrainEmbeddingVAE").train(model, positive, negative, "token_mlp",
                                                  "ddim_uniform", 2, 7.5, 1, 1e-3, 1e-4, 0, "", {"samples": latent})


@pytest.mark.parametrize("weight", ["nan", "inf"])
def test_a_non_finite_prompt_weight_is_refused(tiny_sd15_clip, weight):
    with pytest.raises(ValueError, match="P2P Prompts: source / edits: .* NaN or infinite.*'\\(word:nan\\)'"):
        node("PromptEditP2PPrompts").build(tiny_sd15_clip, {"samples": torch.zeros(1, 4, 8, 8)},
                                           f"a (cat:{weight}) on a mat", "a dog on a mat")


@pytest.mark.parametrize("windows", ["dog=nan", "dog=0.1-inf", "dog=-inf", "dog=nan-0.5"])
def test_word_windows_refuse_non_finite_fractions(tiny_sd15, tiny_sd15_clip, windows):
    edit = node("PromptEditP2PPrompts").build(tiny_sd15_clip, {"samples": torch.zeros(1, 4, 8, 8)}, "a cat", "a dog")[2]
    with pytest.raises(ValueError, match=f"word_windows entry '{windows}': .* give a finite number"):
        node("PromptEditP2PAttentionControl").apply(tiny_sd15, edit, "replace", 0.0, 0.8, 0.4, "coarse",
                                                    word_windows=windows, clip=tiny_sd15_clip)


def test_a_diverged_embedding_vae_is_refused_not_saved(tiny_sd15, tmp_path, monkeypatch):
    import folder_paths

    from comfyui_prompt_edit.nodes import embedding_vae
    from comfyui_prompt_edit.vae_embed.model import EmbeddingVAE, EmbeddingVAEConfig

    vae = EmbeddingVAE(EmbeddingVAEConfig("token_mlp", 4, 8))

    def diverging(progress, interrupt):
        with torch.no_grad():
            next(vae.parameters()).fill_(math.nan)
        progress(1, 1, math.nan)
        return [math.nan]

    folder_paths.add_model_folder_path(embedding_vae.FOLDER, str(tmp_path), is_default=True)
    with pytest.raises(ValueError, match=r"learning_rate \(the trained VAE's weights\): .* lower learning_rate"):
        embedding_vae._run_training(diverging, vae, "null-text", tiny_sd15, 1, "diverged")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------
# item 7: a ddim inversion sampled at another cfg


@pytest.mark.parametrize("method", ["ddim", "null-text fast"])
def test_an_inversion_sampled_at_another_cfg_is_refused_before_the_first_step(photo, method):
    model, clip, latent = photo
    positive, negative, noisy, inversion = invert(model, clip, latent, method, steps=2, guidance=7.5, inner_steps=1)
    with pytest.raises(ValueError, match=(f"the inversion \\(method '{method}'\\) was made for cfg 7.5, the sampler "
                                          "uses cfg 3, .*sample at cfg 7.5, or invert again with guidance 3 "
                                          "\\(or with method 'direct'")):
        reconstruct(model, positive, negative, noisy, inversion, cfg=3.0, steps=2)
    assert reconstruct(model, positive, negative, noisy, inversion, cfg=7.5, steps=2).isfinite().all()


def test_a_direct_inversion_is_sampled_at_any_cfg(photo):
    model, clip, latent = photo
    positive, negative, noisy, inversion = invert(model, clip, latent, "direct", steps=2, guidance=7.5)
    assert reconstruct(model, positive, negative, noisy, inversion, cfg=3.0, steps=2).isfinite().all()


# ------------------------------------------------------------------------------------------------
# through ComfyUI's executor and a real server: the user sees the refusal


def test_a_non_finite_int_widget_is_a_validation_error(comfy_nodes):
    """INT widgets need no check of the pack's: the host refuses to convert NaN / inf to an int."""
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": math.inf}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "3": {"class_type": "PromptEditReconstructionMetrics",
              "inputs": {"original": ["2", 0], "reconstruction": ["2", 0], "original_latent": ["1", 0]}},
    }
    with pytest.raises(AssertionError, match="batch_size"):
        workflows.run_api_prompt(prompt, fresh_executor=True)


def _post(url: str, prompt: dict) -> str:
    body = json.dumps({"prompt": prompt, "client_id": "bad-numbers"}).encode()  # NaN as JSON's NaN, as a client sends it
    request = urllib.request.Request(f"{url}/prompt", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["prompt_id"]


def _execution_error(url: str, prompt_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/history/{prompt_id}", timeout=30) as response:
            history = json.loads(response.read())
        if prompt_id in history:
            status = history[prompt_id]["status"]
            assert status["status_str"] == "error", status
            return next(m[1] for m in status["messages"] if m[0] == "execution_error")
        time.sleep(0.3)
    pytest.fail(f"the server gave no result for {prompt_id} within {timeout} s")


def test_the_server_shows_a_nan_blend_threshold_to_the_user(comfy_server):
    url, checkpoint, _ = comfy_server
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "PromptEditP2PPrompts", "inputs": {"clip": ["1", 1], "latent": ["2", 0],
                                                               "source": "a cat", "edits": "a dog"}},
        "4": {"class_type": "PromptEditP2PLocalBlend", "inputs": {"p2p_edit": ["3", 2], "clip": ["1", 1],
                                                                  "source_words": "cat", "target_words": "dog",
                                                                  "threshold": math.nan, "start": 0.2}},
        "5": {"class_type": "PromptEditP2PAttentionControl", "inputs": {
            "model": ["1", 0], "p2p_edit": ["4", 0], "edit": "replace", "cross_attention_start": 0.0,
            "cross_attention_end": 0.8, "self_attention_end": 0.4, "self_attention_layers": "coarse"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["5", 0], "seed": 0, "steps": 1, "cfg": 7.5,
                                                   "sampler_name": "euler", "scheduler": "normal", "positive": ["3", 0],
                                                   "negative": ["6", 0], "latent_image": ["3", 1], "denoise": 1.0}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
    }
    error = _execution_error(url, _post(url, prompt))
    assert error["node_id"] == "4" and error["node_type"] == "PromptEditP2PLocalBlend"
    assert error["exception_message"].startswith("P2P Local Blend: threshold is nan; give a finite number from 0.0 to 1.0")


def test_the_server_shows_a_nan_latent_to_the_user(comfy_server):
    """A NaN made by a stock node (LatentMultiply by NaN) is refused where it enters the pack."""
    url, _, _ = comfy_server
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "LatentMultiply", "inputs": {"samples": ["1", 0], "multiplier": math.nan}},
        "3": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "4": {"class_type": "PromptEditReconstructionMetrics",
              "inputs": {"original": ["3", 0], "reconstruction": ["3", 0], "original_latent": ["2", 0],
                         "reconstructed_latent": ["1", 0]}},
    }
    error = _execution_error(url, _post(url, prompt))
    assert error["node_type"] == "PromptEditReconstructionMetrics"
    assert error["exception_message"].startswith("Reconstruction Metrics: original_latent: 256 of its 256 values are "
                                                 "NaN or infinite; the node that makes it produced them")
