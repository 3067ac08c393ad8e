"""The harness itself: tiny models really sample, the generated checkpoint goes through the stock
loader and executor, UI workflows convert to the API prompts the frontend would send."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from harness import comfyui, model_files, pack, tiny_models, workflows
from workflow_api import ui_to_api
import pytest
import torch

pytestmark = pytest.mark.comfy


# ------------------------------------------------------------------------------------------------
# Tiny models

FAMILIES = {
    # name: (model fixture, clip fixture, model type, cond width, pooled width)
    "sd15": ("tiny_sd15", "tiny_sd15_clip", "EPS", tiny_models.TINY_SD15_CONTEXT_DIM, tiny_models.TINY_SD15_CONTEXT_DIM),
    "sd2v": ("tiny_sd2v", "tiny_sd2_clip", "V_PREDICTION", tiny_models.TINY_SD2_CONTEXT_DIM, tiny_models.TINY_SD2_CONTEXT_DIM),
    "sdxl": ("tiny_sdxl", "tiny_sdxl_clip", "EPS", tiny_models.TINY_SDXL_CONTEXT_DIM, tiny_models.TINY_SDXL_POOLED_DIM),
}


def _sample(model: Any, positive: list, negative: list, seed: int) -> torch.Tensor:
    import comfy.sample

    latent = torch.zeros(2, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(
        model, noise, 4, 5.0, "euler", "normal", positive, negative, latent, seed=seed, disable_pbar=True
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_samples_through_stock_sampler(request: pytest.FixtureRequest, family: str) -> None:
    model_fixture, clip_fixture, model_type, cond_dim, pooled_dim = FAMILIES[family]
    model = request.getfixturevalue(model_fixture)
    clip = request.getfixturevalue(clip_fixture)
    assert model.model.model_type.name == model_type
    positive = comfyui.encode(clip, "a photo of a cat on a mat")
    negative = comfyui.encode(clip, "")
    cond, extra = positive[0]
    assert cond.shape == (1, 77, cond_dim) and cond.dtype == torch.float32
    assert extra["pooled_output"].shape == (1, pooled_dim)

    first = _sample(model, positive, negative, seed=1)
    assert first.shape == (2, 4, 8, 8)
    assert torch.isfinite(first).all() and first.std() > 0
    assert torch.equal(first, _sample(model, positive, negative, seed=1))
    assert not torch.equal(first, _sample(model, positive, negative, seed=2))
    edited = _sample(model, comfyui.encode(clip, "a photo of a dog on a mat"), negative, seed=1)
    assert (edited - first).abs().max() > 1e-2 * first.abs().max()  # the prompt matters


@pytest.mark.parametrize(
    "clip_fixture, pads",
    [("tiny_sd15_clip", {"l": 49407}), ("tiny_sd2_clip", {"h": 0}), ("tiny_sdxl_clip", {"g": 0, "l": 49407})],
)
def test_tiny_clips_use_the_real_tokenizers(request: pytest.FixtureRequest, clip_fixture: str, pads: dict) -> None:
    tokens = request.getfixturevalue(clip_fixture).tokenize("a cat")
    assert {key: chunks[0][-1][0] for key, chunks in tokens.items()} == pads
    assert all(chunks[0][0][0] == 49406 and len(chunks[0]) == 77 for chunks in tokens.values())


def test_sd2v_model_keeps_sd2_attention_settings(tiny_sd2v: Any) -> None:
    attentions = [m for m in tiny_sd2v.model.diffusion_model.modules() if type(m).__name__ == "CrossAttention"]
    assert attentions and all(m.attn_precision == torch.float32 and m.to_q.out_features == 64 * m.heads for m in attentions)


def test_tiny_vae_round_trip_shapes(tiny_vae: Any) -> None:
    latent = tiny_vae.encode(torch.rand(1, 64, 64, 3))
    assert latent.shape == (1, 4, 8, 8)
    image = tiny_vae.decode(latent)
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()


# ------------------------------------------------------------------------------------------------
# Checkpoint, stock loader and executor


def _stock_api_prompt(ckpt_name: str) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 42,
                "steps": 3,
                "cfg": 7,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "harness", "images": ["8", 0]}},
    }


def test_checkpoint_is_detected_as_sd15(comfy_nodes: Any, sd15_checkpoint: str) -> None:
    import comfy.supported_models

    model, clip, vae = comfy_nodes.CheckpointLoaderSimple().load_checkpoint(sd15_checkpoint)
    assert type(model.model.model_config) is comfy.supported_models.SD15
    assert clip is not None and vae.first_stage_model is not None
    assert model_files.sd15_checkpoint_path().name == sd15_checkpoint


def test_stock_prompt_runs_and_saves_image(sd15_checkpoint: str) -> None:
    outputs = workflows.run_api_prompt(_stock_api_prompt(sd15_checkpoint), fresh_executor=True)
    (image,) = workflows.output_images(outputs, "9")
    assert image.shape == (64, 64, 3)


def test_invalid_prompt_reports_node_errors(sd15_checkpoint: str) -> None:
    prompt = _stock_api_prompt(sd15_checkpoint)
    prompt["3"]["inputs"]["steps"] = 0
    with pytest.raises(AssertionError, match=r"node 3 \(KSampler\):\n.*steps"):
        workflows.run_api_prompt(prompt)


def test_execution_error_names_node_and_exception(comfy_nodes: Any) -> None:
    import folder_paths

    (Path(folder_paths.get_input_directory()) / "not_an_image.png").write_text("plain text")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "not_an_image.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    with pytest.raises(AssertionError, match=r"LoadImage \(node 1\) raised PIL\.UnidentifiedImageError"):
        workflows.run_api_prompt(prompt, fresh_executor=True)


def test_pack_nodes_are_registered_with_the_executor(comfy_nodes: Any) -> None:
    if comfyui.pack_import_error() is not None:
        raise comfyui.pack_import_error()
    mappings = getattr(sys.modules[pack.PACK], "NODE_CLASS_MAPPINGS", None)
    if mappings is None:
        pytest.skip("the pack defines no NODE_CLASS_MAPPINGS yet")
    assert all(comfy_nodes.NODE_CLASS_MAPPINGS[name] is cls for name, cls in mappings.items())


# ------------------------------------------------------------------------------------------------
# UI workflow -> API prompt


def _node(node_id: int, class_type: str, inputs: list, outputs: list, widgets: list, mode: int = 0) -> dict:
    """A node as the frontend saves it; inputs are (name, type, link or None[, widget name])."""
    return {
        "id": node_id,
        "type": class_type,
        "pos": [100 * node_id, 100],
        "size": [315, 100],
        "flags": {},
        "order": node_id,
        "mode": mode,
        "inputs": [
            {"name": name, "type": kind, "link": link, **({"widget": {"name": rest[0]}} if rest else {})}
            for name, kind, link, *rest in inputs
        ],
        "outputs": [
            {"name": name, "type": kind, "links": links, "slot_index": slot}
            for slot, (name, kind, links) in enumerate(outputs)
        ],
        "properties": {"Node name for S&R": class_type},
        "widgets_values": widgets,
    }


def _workflow(nodes: list[dict], links: list[list]) -> dict:
    return {
        "last_node_id": max(n["id"] for n in nodes),
        "last_link_id": max(link[0] for link in links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
        "version": 0.4,
    }


def _stock_ui_nodes(ckpt_name: str) -> list[dict]:
    return [
        _node(
            4,
            "CheckpointLoaderSimple",
            [("ckpt_name", "COMBO", None, "ckpt_name")],
            [("MODEL", "MODEL", [1]), ("CLIP", "CLIP", [3, 5]), ("VAE", "VAE", [8])],
            [ckpt_name],
        ),
        _node(
            6,
            "CLIPTextEncode",
            [("clip", "CLIP", 3), ("text", "STRING", None, "text")],
            [("CONDITIONING", "CONDITIONING", [4])],
            ["a photo of a cat"],
        ),
        _node(
            7,
            "CLIPTextEncode",
            [("clip", "CLIP", 5), ("text", "STRING", None, "text")],
            [("CONDITIONING", "CONDITIONING", [6])],
            ["blurry"],
        ),
        _node(
            5,
            "EmptyLatentImage",
            [("width", "INT", None, "width"), ("height", "INT", None, "height"), ("batch_size", "INT", None, "batch_size")],
            [("LATENT", "LATENT", [2])],
            [64, 64, 1],
        ),
        _node(
            3,
            "KSampler",
            [
                ("model", "MODEL", 1),
                ("positive", "CONDITIONING", 4),
                ("negative", "CONDITIONING", 6),
                ("latent_image", "LATENT", 2),
                ("seed", "INT", None, "seed"),
                ("steps", "INT", None, "steps"),
                ("cfg", "FLOAT", None, "cfg"),
                ("sampler_name", "COMBO", None, "sampler_name"),
                ("scheduler", "COMBO", None, "scheduler"),
                ("denoise", "FLOAT", None, "denoise"),
            ],
            [("LATENT", "LATENT", [7])],
            [42, "randomize", 3, 7, "euler", "normal", 1],
        ),
        _node(8, "VAEDecode", [("samples", "LATENT", 7), ("vae", "VAE", 8)], [("IMAGE", "IMAGE", [9])], []),
        _node(9, "SaveImage", [("images", "IMAGE", 9), ("filename_prefix", "STRING", None, "filename_prefix")], [], ["harness"]),
        _node(10, "Note", [], [], ["Frontend-only: dropped from the API prompt."]),
    ]


STOCK_LINKS = [
    [1, 4, 0, 3, 0, "MODEL"],
    [2, 5, 0, 3, 3, "LATENT"],
    [3, 4, 1, 6, 0, "CLIP"],
    [4, 6, 0, 3, 1, "CONDITIONING"],
    [5, 4, 1, 7, 0, "CLIP"],
    [6, 7, 0, 3, 2, "CONDITIONING"],
    [7, 3, 0, 8, 0, "LATENT"],
    [8, 4, 2, 8, 1, "VAE"],
    [9, 8, 0, 9, 0, "IMAGE"],
]


def test_ui_workflow_converts_to_hand_written_api_prompt(comfy_nodes: Any) -> None:
    workflow = _workflow(_stock_ui_nodes("tiny_sd15.safetensors"), STOCK_LINKS)
    prompt = ui_to_api(workflow, comfy_nodes.NODE_CLASS_MAPPINGS)
    assert prompt == _stock_api_prompt("tiny_sd15.safetensors")


def test_ui_conversion_resolves_frontend_only_muted_bypassed_and_v3_nodes(comfy_nodes: Any) -> None:
    """PrimitiveInt (a V3 node with a control widget) drives a converted width widget, a
    PrimitiveNode sets cfg, a Reroute carries the VAE, a bypassed LatentUpscaleBy passes the
    latent through and a muted PreviewImage disappears."""
    nodes = {n["id"]: n for n in _stock_ui_nodes("tiny_sd15.safetensors")}
    nodes[5]["inputs"][0]["link"] = 20  # width <- PrimitiveInt
    nodes[5]["widgets_values"] = [512, 64, 1]  # the stale width value stays in its slot
    nodes[3]["inputs"][6]["link"] = 21  # cfg <- PrimitiveNode
    nodes[3]["inputs"][3]["link"] = 25  # latent_image <- bypassed upscale
    nodes[8]["inputs"][1]["link"] = 23  # vae <- Reroute
    nodes[8]["outputs"][0]["links"] = [9, 26]
    extra = [
        _node(11, "PrimitiveInt", [("value", "INT", None, "value")], [("INT", "INT", [20])], [64, "fixed"]),
        _node(12, "PrimitiveNode", [], [("FLOAT", "FLOAT", [21])], [7.5, "fixed"]),
        _node(13, "Reroute", [("", "*", 22)], [("VAE", "VAE", [23])], []),
        _node(
            14,
            "LatentUpscaleBy",
            [
                ("samples", "LATENT", 24),
                ("upscale_method", "COMBO", None, "upscale_method"),
                ("scale_by", "FLOAT", None, "scale_by"),
            ],
            [("LATENT", "LATENT", [25])],
            ["nearest-exact", 1.5],
            mode=4,
        ),
        _node(15, "PreviewImage", [("images", "IMAGE", 26)], [], [], mode=2),
    ]
    links = [link for link in STOCK_LINKS if link[0] not in (2, 8)] + [
        [20, 11, 0, 5, 0, "INT"],
        [21, 12, 0, 3, 6, "FLOAT"],
        [22, 4, 2, 13, 0, "VAE"],
        [23, 13, 0, 8, 1, "VAE"],
        [24, 5, 0, 14, 0, "LATENT"],
        [25, 14, 0, 3, 3, "LATENT"],
        [26, 8, 0, 15, 0, "IMAGE"],
    ]
    prompt = ui_to_api(_workflow([*nodes.values(), *extra], links), comfy_nodes.NODE_CLASS_MAPPINGS)

    expected = _stock_api_prompt("tiny_sd15.safetensors")
    expected["5"]["inputs"]["width"] = ["11", 0]
    expected["3"]["inputs"]["cfg"] = 7.5
    expected["11"] = {"class_type": "PrimitiveInt", "inputs": {"value": 64}}
    assert prompt == expected


def test_ui_conversion_rejects_misaligned_widget_values(comfy_nodes: Any) -> None:
    nodes = _stock_ui_nodes("tiny_sd15.safetensors")
    nodes[4]["widgets_values"] = [42, 3, 7, "euler", "normal", 1]  # KSampler without its seed control
    with pytest.raises(ValueError, match=r"node 3 \(KSampler\): widgets_values has 6 entries"):
        ui_to_api(_workflow(nodes, STOCK_LINKS), comfy_nodes.NODE_CLASS_MAPPINGS)


# ------------------------------------------------------------------------------------------------
# Locating ComfyUI


def test_find_comfyui_honours_comfyui_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    fallback, _ = comfyui.find_comfyui()
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    assert comfyui.find_comfyui()[0] == fallback  # no nodes.py/comfy/ there: the next candidate wins

    (tmp_path / "comfy").mkdir()
    (tmp_path / "nodes.py").write_text("")
    assert comfyui.find_comfyui() == (tmp_path.resolve(), "")
