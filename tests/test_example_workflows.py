"""Every example workflow (example_workflows/*.json, as listed in ComfyUI's templates browser) is a
consistent UI-format graph, and runs through ComfyUI's real validator and executor.

The workflows are converted to API prompts as the frontend would queue them, pointed at the
random-weight SD1.5 checkpoint and shrunk for the CPU (64x64, 3 steps) by class_type, never by
node id, so a new or re-laid-out workflow is checked without touching this file. LoadImage gets a
deterministic 64x64 PNG written into ComfyUI's input directory under the name the workflow uses.

The Flux and SD3.5 workflows load random-weight model files (harness/mmdit_files.py) through the
stock UNETLoader, CheckpointLoaderSimple and VAELoader, which ComfyUI's model detection reads as a
comfy.model_base.Flux / SD3. Their text-encoder loaders are the one exception: ComfyUI builds
T5-XXL at its full 4.7 G parameters whatever a file holds (the config comes only from the
loader's model options), more than the CI machine holds, so DualCLIPLoader / TripleCLIPLoader are
replaced, by class_type in the API prompt, with test-only nodes that return a real comfy.sd.CLIP
with the real tokenizers and tiny encoders (mmdit_models.tiny_flux_clip / tiny_sd3_clip).

The newer families' workflows (Qwen-Image, Flux.2 klein, Z-Image, Chroma; harness/family_files.py)
load their VAEs, and Flux.2 klein its diffusion model, as tiny files through the stock loaders; the
diffusion models whose layout detection assumes at full width (Qwen-Image, Chroma, Z-Image) and
every CLIPLoader are replaced the same way as the T5 loaders, by test-only nodes returning the
family harness's tiny models. On a ComfyUI without the family (0.3.64: Flux.2, Z-Image) the test
asserts the pack's message naming the version that adds it. Each of them, and every other direct
inversion, must give back the photo as its source image (its VAE round trip) and an edit that differs.

The Wan video workflow loads its diffusion model through the stock UNETLoader too (a tiny Wan 2.1
file), its umT5 from a stand-in as wide as that file's text, and a 5-frame H.264 test video
(harness/video_files.py) through Load Video; its video node (Save WEBM) gets a SaveImage of the same
frames beside it, whose PNGs are compared: the source item's frames are the video frames' VAE round
trip within 1/255, and, Local Blend's threshold raised, every latent frame of the edit is the
source's outside the blend and moved inside it (SaveLatent after the sampler).

Workflows that sample from an inversion are also checked, before shrinking, for the wiring that
makes the inversion reconstruct (add_noise disabled, euler/ddim, the inversion's scheduler, steps
and guidance, its negative prompt and noisy latent): shrunk to 3 steps everywhere, a 50-vs-30 step
mismatch would otherwise go unnoticed.
"""

from __future__ import annotations

import copy
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest

from harness import family_files, mmdit_files, mmdit_models, model_files, pack, video_files, workflows
from workflow_api import FRONTEND_ONLY_NODES, load_workflow, ui_to_api

pytestmark = pytest.mark.comfy

WORKFLOW_DIR = pack.ROOT / "example_workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
IMAGE_OUTPUTS = {"SaveImage", "PreviewImage"}
MAPS_NODE = "PromptEditP2PAttentionMaps"
SIZE, STEPS = 64, 3
INNER_STEPS = 2  # null-text Adam steps per sampling step
INVERT_NODE = "PromptEditInvertImage"
APPLY_NODE = "PromptEditApplyInversion"
METRICS_NODE = "PromptEditReconstructionMetrics"
SAVE_INVERSION_NODE = "PromptEditSaveInversion"
INVERSION_FOLDER = "inversions"
VARIATIONS_NODE = "PromptEditStochasticEmbeddings"
TRAIN_VAE_NODE = "PromptEditTrainEmbeddingVAE"
TRAIN_CONDITIONAL_NODE = "PromptEditTrainConditionalEmbeddingVAE"
TRAIN_NODES = (TRAIN_VAE_NODE, TRAIN_CONDITIONAL_NODE)
LOAD_VAE_NODE = "PromptEditLoadEmbeddingVAE"
EMBEDDING_VAE_FOLDER = "embedding_vae"
TRAIN_ITERATIONS = 3
EXACT_SAMPLERS = ("euler", "ddim")
LABEL_HEIGHT = 20  # text strip under each attention-map tile
CONTROL_NODE = "PromptEditP2PAttentionControl"
KEEP_NODE = "PromptEditKeepOutsideMask"
COMPOSITE_NODE = "PromptEditKeepMaskComposite"
KEPT_ROWS = slice(48, None)  # rows of the 64x64 test photo well outside its mask (the square, rows 16-39)
MMDIT_LATENT_NODE = "EmptySD3LatentImage"
SD35_CHECKPOINTS = ("sd3.5_large.safetensors",)  # the SD3.5 checkpoints the examples load
FLUX_FILE_LOADERS = {"UNETLoader": "unet_name", "VAELoader": "vae_name"}  # stock loaders: their file input
PIXEL_LOADERS = {"LoadImage", "LoadVideo"}
# What the saved source item may differ from the loaded pixels' VAE round trip by (of 255)
SOURCE_TOLERANCE, VIDEO_SOURCE_TOLERANCE = 2, 1
# Stock nodes that save an IMAGE batch as one animation or video: the test saves the same frames
# as PNGs beside it (lossless, to compare) and checks that the file was written
VIDEO_OUTPUTS = {"SaveWEBM", "SaveAnimatedWEBP", "SaveAnimatedPNG"}
BLEND_NODE = "PromptEditP2PLocalBlend"
# Local Blend's threshold in a video workflow's test: at 64x64 (4x4 tokens a frame) the 3x3 max-pool
# of the word maps leaves no cell outside the mask at the usual 0.3
VIDEO_BLEND_THRESHOLD = 0.7


def test_there_are_example_workflows():
    assert len(WORKFLOWS) >= 6, f"expected the pack's example workflows in {WORKFLOW_DIR}"


def check_ui_format(workflow: dict, node_class_mappings: dict) -> None:
    """Schema-0.4 structure and link consistency, as the frontend needs it to load the graph."""
    assert workflow.get("version") == 0.4
    nodes = workflow["nodes"]
    links = workflow["links"]
    by_id = {node["id"]: node for node in nodes}
    assert len(by_id) == len(nodes), "duplicate node ids"
    link_ids = [link[0] for link in links]
    assert len(set(link_ids)) == len(link_ids), "duplicate link ids"
    assert workflow["last_node_id"] >= max(by_id)
    assert workflow["last_link_id"] >= max(link_ids, default=0)
    for key in ("groups", "config", "extra"):
        assert key in workflow, f"missing {key!r}"

    for node in nodes:
        where = f"node {node['id']} ({node['type']})"
        for key in ("type", "pos", "size", "flags", "order", "mode", "properties", "widgets_values"):
            assert key in node, f"{where}: missing {key!r}"
        assert len(node["pos"]) == 2 and len(node["size"]) == 2, where
        if node["type"] not in FRONTEND_ONLY_NODES:
            assert node["type"] in node_class_mappings, f"{where}: unknown node type"
            assert node["properties"].get("Node name for S&R") == node["type"], where
        for slot, entry in enumerate(node.get("inputs") or []):
            if entry.get("link") is not None:
                link = next((candidate for candidate in links if candidate[0] == entry["link"]), None)
                assert link is not None, f"{where}: input {entry['name']} names missing link {entry['link']}"
                assert (link[3], link[4]) == (node["id"], slot), f"{where}: link {link[0]} targets {link[3:5]}"
        for slot, entry in enumerate(node.get("outputs") or []):
            for link_id in entry.get("links") or []:
                link = next((candidate for candidate in links if candidate[0] == link_id), None)
                assert link is not None, f"{where}: output {entry['name']} names missing link {link_id}"
                assert (link[1], link[2]) == (node["id"], slot), f"{where}: link {link_id} leaves {link[1:3]}"

    for link_id, origin_id, origin_slot, target_id, target_slot, link_type in links:
        origin, target = by_id[origin_id], by_id[target_id]
        output = origin["outputs"][origin_slot]
        target_input = target["inputs"][target_slot]
        assert link_id in (output.get("links") or []), f"link {link_id} not in its origin's output links"
        assert target_input.get("link") == link_id, f"link {link_id} not on its target's input"
        assert output["type"] == link_type == target_input["type"], (
            f"link {link_id}: {origin['type']}.{output['name']} ({output['type']}) -> "
            f"{target['type']}.{target_input['name']} ({target_input['type']}) typed {link_type}"
        )
        if target["type"] in node_class_mappings:  # the input type matches the class's declaration
            spec = node_class_mappings[target["type"]].INPUT_TYPES()
            declared = {**spec.get("required", {}), **spec.get("optional", {})}.get(target_input["name"])
            assert declared is not None, f"link {link_id}: {target['type']} has no input {target_input['name']}"
            assert declared[0] == link_type, f"link {link_id}: {target_input['name']} takes {declared[0]}"
        if origin["type"] in node_class_mappings:
            assert node_class_mappings[origin["type"]].RETURN_TYPES[origin_slot] == link_type, f"link {link_id}"

    # order: a valid topological order of the graph
    order = {node["id"]: node["order"] for node in nodes}
    assert sorted(order.values()) == list(range(len(nodes))), "order is not a permutation"
    for _, origin_id, _, target_id, _, _ in links:
        assert order[origin_id] < order[target_id], f"order puts {target_id} before its input {origin_id}"


def shrink(prompt: dict, checkpoint: str, mmdit_names: dict[str, str], family_names: dict[str, str]) -> dict:
    """Point every loader at a test file: checkpoint loaders at the SD1.5 test checkpoint (SD3.5's
    at the SD3.5 one), the diffusion-model and VAE loaders at the newer families' files by the name
    the workflow loads (family_names), else at the Flux files (mmdit_names, from
    mmdit_files.register_mmdit_files); 64x64 latents and resized frames, 3 sampler steps, and inversions of 3 steps
    (so their schedule stays the sampler's) with 2 inner steps."""
    for node in prompt.values():
        inputs = node["inputs"]
        if "ckpt_name" in inputs:
            inputs["ckpt_name"] = mmdit_names["ckpt_name"] if inputs["ckpt_name"] in SD35_CHECKPOINTS else checkpoint
        if node["class_type"] in FLUX_FILE_LOADERS:
            name = FLUX_FILE_LOADERS[node["class_type"]]
            inputs[name] = family_names.get(inputs[name], mmdit_names[name])
        if node["class_type"] in ("EmptyLatentImage", MMDIT_LATENT_NODE, "ImageScale"):
            inputs["width"] = inputs["height"] = SIZE
        if node["class_type"] in ("KSampler", "KSamplerAdvanced"):
            inputs["steps"] = STEPS
        if node["class_type"] == INVERT_NODE:
            inputs["steps"] = STEPS
            inputs["inner_steps"] = INNER_STEPS
        if node["class_type"] in TRAIN_NODES:
            inputs["steps"] = STEPS
            inputs["iterations"] = TRAIN_ITERATIONS
        if node["class_type"] == KEEP_NODE:  # the mask as painted: 8 latent cells cannot spare a margin
            inputs["dilation"] = inputs["feathering"] = 0
    return prompt


def stand_in_loader_node(build, return_type: str) -> type:
    """A test-only loader node without inputs that returns build(): it stands in for a stock loader
    that cannot load a model at test size (see the module docstring)."""

    class TinyModelLoader:
        CATEGORY = "testing"
        FUNCTION = "load"
        RETURN_TYPES = (return_type,)

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def load(self):
            return (build(),)

    return TinyModelLoader


TINY_TEXT_ENCODER_NODES = {"DualCLIPLoader": "TestTinyFluxTextEncoders", "TripleCLIPLoader": "TestTinySD3TextEncoders"}
QWEN_IMAGE_EDIT_ENCODER = "TextEncodeQwenImageEdit"


class PhotoSizeQwenImageEdit:
    """TextEncodeQwenImageEdit with the photo at its own size: the stock node scales it to one
    megapixel for the vision tokens and the reference latent (4096 reference tokens: minutes of
    attention for the tiny model on the CPU). Otherwise the stock node's: the photo's vision tokens
    before the prompt (the tiny Qwen2.5-VL's tower), and ``reference_latents``."""

    CATEGORY = "testing"
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",), "prompt": ("STRING", {"multiline": True})},
                "optional": {"vae": ("VAE",), "image": ("IMAGE",)}}

    def encode(self, clip, prompt, vae=None, image=None):
        import node_helpers

        images = [] if image is None else [image[:, :, :, :3]]
        conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(prompt, images=images))
        if vae is not None and image is not None:
            reference = vae.encode(image[:, :, :, :3])
            conditioning = node_helpers.conditioning_set_values(conditioning, {"reference_latents": [reference]},
                                                                append=True)
        return (conditioning,)


def tiny_family_text_encoder_node(clip_type: str) -> str:
    return f"TestTinyTextEncoder_{clip_type}"


def tiny_family_model_node(family: str) -> str:
    return f"TestTinyDiffusionModel_{family}"


@pytest.fixture
def tiny_model_nodes(comfy_nodes, mmdit_names):
    """The test-only stand-ins, registered while the test runs: TINY_TEXT_ENCODER_NODES (the Flux
    one's T5 as wide as the Flux file's context, mmdit_files.flux_t5_width), one per CLIPLoader type
    and one per newer family whose diffusion model the host's detection reads only at full width."""
    t5_width = mmdit_files.flux_t5_width()
    stand_ins = {"TestTinyFluxTextEncoders": stand_in_loader_node(lambda: mmdit_models.tiny_flux_clip(t5_width=t5_width), "CLIP"),
                 "TestTinySD3TextEncoders": stand_in_loader_node(mmdit_models.tiny_sd3_clip, "CLIP")}
    for clip_type, build in family_files.TEXT_ENCODERS_BY_TYPE.items():
        stand_ins[tiny_family_text_encoder_node(clip_type)] = stand_in_loader_node(build, "CLIP")
    stand_ins["TestPhotoSizeQwenImageEdit"] = PhotoSizeQwenImageEdit
    for family in set(family_files.DIFFUSION_MODEL_FAMILIES.values()):
        if not family_files.loads_through_unet_loader(family):
            stand_ins[tiny_family_model_node(family)] = stand_in_loader_node(
                lambda family=family: family_files.tiny_diffusion_model(family), "MODEL")
    comfy_nodes.NODE_CLASS_MAPPINGS.update(stand_ins)
    try:
        yield
    finally:
        for name in stand_ins:
            del comfy_nodes.NODE_CLASS_MAPPINGS[name]


def replace_loaders_with_stand_ins(prompt: dict) -> None:
    """Swap, by class_type in the API prompt, each Flux / SD3 text-encoder loader, each CLIPLoader of
    a newer family and each diffusion-model loader that cannot load its family's tiny file for its
    tiny stand-in, and TextEncodeQwenImageEdit for PhotoSizeQwenImageEdit."""
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == QWEN_IMAGE_EDIT_ENCODER:
            node["class_type"] = "TestPhotoSizeQwenImageEdit"
            continue  # its inputs stay
        if kind in TINY_TEXT_ENCODER_NODES:
            node["class_type"] = TINY_TEXT_ENCODER_NODES[kind]
        elif kind == "CLIPLoader" and inputs["type"] in family_files.TEXT_ENCODERS_BY_TYPE:
            node["class_type"] = tiny_family_text_encoder_node(inputs["type"])
        elif kind == "UNETLoader" and inputs["unet_name"] in family_files.DIFFUSION_MODEL_FAMILIES:
            family = family_files.DIFFUSION_MODEL_FAMILIES[inputs["unet_name"]]
            if family_files.loads_through_unet_loader(family):
                continue
            node["class_type"] = tiny_family_model_node(family)
        else:
            continue
        node["inputs"] = {}


def workflow_family(workflow: dict) -> str | None:
    """The newer family whose diffusion model the workflow loads, if any."""
    return next((family_files.DIFFUSION_MODEL_FAMILIES[node["widgets_values"][0]] for node in workflow["nodes"]
                 if node["type"] == "UNETLoader" and node["widgets_values"][0] in family_files.DIFFUSION_MODEL_FAMILIES),
                None)


def host_has_family(family: str) -> bool:
    """Whether this ComfyUI has the family; where it has not, the pack's message names the version
    that adds it."""
    from comfyui_prompt_edit.families import UnsupportedModelError, family_by_id

    try:
        family_by_id(family)
    except UnsupportedModelError as error:
        assert re.search(r"need ComfyUI \d+\.\d+\.\d+ or newer", str(error)), str(error)
        assert "Update ComfyUI" in str(error), str(error)
        return False
    return True


@pytest.fixture(scope="session")
def mmdit_names(comfy_nodes) -> dict[str, str]:
    """The Flux / SD3.5 test files, written once and registered in ComfyUI's model folders."""
    return mmdit_files.register_mmdit_files()


@pytest.fixture(scope="session")
def family_names(comfy_nodes, mmdit_names) -> dict[str, str]:
    """The test file for each newer-family file the examples load through a stock loader, by the
    name the workflow gives it; written once into the folder mmdit_names registered."""
    names = {name: make().name for name, (family, make) in family_files.VAE_FILES.items()
             if family is None or host_has_family(family)}
    for name, family in family_files.DIFFUSION_MODEL_FAMILIES.items():
        if family_files.loads_through_unet_loader(family) and host_has_family(family):
            names[name] = family_files.UNET_LOADER_FILES[family]().name
    return names


def test_the_mmdit_files_load_through_the_stock_loaders_as_flux_and_sd35(comfy_nodes, mmdit_names):
    import comfy.model_base

    (flux,) = comfy_nodes.UNETLoader().load_unet(mmdit_names["unet_name"], "default")
    assert type(flux.model) is comfy.model_base.Flux
    assert flux.model.model_config.unet_config["guidance_embed"], "a Flux-dev layout (schnell has no guidance)"
    model, clip, vae = comfy_nodes.CheckpointLoaderSimple().load_checkpoint(mmdit_names["ckpt_name"])[:3]
    assert type(model.model) is comfy.model_base.SD3
    assert model.model.model_config.unet_config["x_block_self_attn_layers"] == [0], "SD3.5's MMDiT-X block"
    assert clip is None, "like sd3.5_large.safetensors, the checkpoint carries no text encoders"
    (flux_vae,) = comfy_nodes.VAELoader().load_vae(mmdit_names["vae_name"])
    assert vae.latent_channels == flux_vae.latent_channels == mmdit_models.MMDIT_LATENT_CHANNELS


def without_attention_control(prompt: dict) -> dict:
    """The prompt sampled without P2P: every P2P Attention Control's MODEL replaced by the model it
    patches, and the nodes that read its attention (the maps, and what shows them) left out."""
    plain = copy.deepcopy(prompt)
    controls = {node_id for node_id, node in plain.items() if node["class_type"] == CONTROL_NODE}
    removed = set(controls)
    while True:
        for node in plain.values():
            for name, value in node["inputs"].items():
                if isinstance(value, list) and value[0] in controls and value[1] == 0:
                    node["inputs"][name] = plain[value[0]]["inputs"]["model"]
        readers = {node_id for node_id, node in plain.items() if node_id not in removed and
                   any(isinstance(v, list) and v[0] in removed for v in node["inputs"].values())}
        if not readers:
            break
        removed |= readers
    return {node_id: node for node_id, node in plain.items() if node_id not in removed}


def check_source_is_plain_sampling(prompt: dict, name: str, saved_tensors: list) -> None:
    """An MMDiT P2P batch (source, edit): the edit moved the edited item, and the source item is
    what the same sampler makes without P2P (run again, the unchanged nodes from the cache)."""
    edited = [t for t in saved_tensors if t.shape[0] == 2 and tuple(t.shape[1:3]) == (SIZE, SIZE)]
    assert len(edited) == 1, f"{name}: expected one saved (source, edit) batch, got {[tuple(t.shape) for t in saved_tensors]}"
    source, edit = edited[0]
    assert (edit - source).abs().max() > 1e-3, f"{name}: the edited image is the source image"
    before = len(saved_tensors)
    workflows.run_api_prompt(without_attention_control(prompt))
    (plain,) = saved_tensors[before:]
    difference = float((plain[0] - source).abs().max())
    print(f"{name}: source vs plain sampling: max pixel difference {difference:.2e}")
    assert difference < 1e-3, f"{name}: the source image is not plain sampling (max difference {difference})"


def _saved_batches_of(prompt: dict, invert_id: str) -> list[tuple[str, bool]]:
    """The SaveImage nodes that save, decoded, what a sampler made from Invert Image invert_id's
    noisy latent with a model through its Apply Inversion: (node id, whether Keep Mask Composite
    put the photo's pixels back on the way)."""
    saves = []
    for node_id, node in prompt.items():
        if node["class_type"] != "SaveImage":
            continue
        images, composited = node["inputs"]["images"], False
        if _source_class(prompt, images) == COMPOSITE_NODE:
            composite = prompt[images[0]]["inputs"]
            images, composited = composite["images"], "photo" in composite
        if _source_class(prompt, images) != "VAEDecode":
            continue
        sampler = prompt[prompt[images[0]]["inputs"]["samples"][0]]["inputs"]
        applied = _upstream(prompt, sampler.get("model"), APPLY_NODE)
        if applied is not None and applied[1]["inputs"]["inversion"][0] == invert_id:
            saves.append((node_id, composited))
    return saves


def _ancestors(prompt: dict, node_id: str) -> set[str]:
    """node_id and every node upstream of it."""
    found, todo = set(), [node_id]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo += [value[0] for value in prompt[current]["inputs"].values() if isinstance(value, list)]
    return found


def _vae_round_trip(prompt: dict, encode: dict) -> list[np.ndarray]:
    """The frames (one for a photo) that the workflow's loaded pixels give through its own VAE alone
    (VAEEncode -> VAEDecode), run with copies of the nodes that load and prepare them (the cache
    serves them)."""
    pixels, vae = encode["inputs"]["pixels"], encode["inputs"]["vae"]
    round_trip = {node_id: copy.deepcopy(prompt[node_id])
                  for node_id in _ancestors(prompt, pixels[0]) | _ancestors(prompt, vae[0])}
    round_trip.update({
        "round_trip_encode": {"class_type": "VAEEncode", "inputs": {"pixels": pixels, "vae": vae}},
        "round_trip_decode": {"class_type": "VAEDecode", "inputs": {"samples": ["round_trip_encode", 0], "vae": vae}},
        "round_trip_save": {"class_type": "SaveImage", "inputs": {"images": ["round_trip_decode", 0],
                                                                  "filename_prefix": "round_trip"}}})
    return workflows.output_images(workflows.run_api_prompt(round_trip), "round_trip_save")


def check_direct_inversion_gives_back_the_photo(prompt: dict, name: str, outputs: dict) -> None:
    """Every direct inversion of a loaded photo or video reconstructs it: the first item its sampler
    saves (a video's first frames) is the loaded pixels' VAE round trip (run here with the
    workflow's own VAE: VAEEncode -> VAEDecode), or, through Keep Mask Composite, the photo itself;
    the items after it (the edits) differ from it, and through Keep Mask Composite they are the
    photo, byte for byte, outside its mask."""
    import folder_paths
    from PIL import Image

    for invert_id, invert in prompt.items():
        if invert["class_type"] != INVERT_NODE or invert["inputs"]["method"] != "direct":
            continue
        encode = prompt[invert["inputs"]["latent"][0]]
        if encode["class_type"] != "VAEEncode":
            continue
        loaders = {prompt[node_id]["class_type"] for node_id in _ancestors(prompt, encode["inputs"]["pixels"][0])}
        if not loaders & PIXEL_LOADERS:
            continue
        decoded = _vae_round_trip(prompt, encode)
        frames = len(decoded)  # 1 for a photo
        if "LoadVideo" in loaders:
            assert frames == video_files.VIDEO_FRAMES, f"{name}: the round trip has {frames} of the video's frames"
        saves = _saved_batches_of(prompt, invert_id)
        assert saves, f"{name}: nothing saves what the direct inversion {invert_id} samples"
        for save_id, composited in saves:
            images = workflows.output_images(outputs, save_id)
            assert len(images) % frames == 0 and len(images) > frames, f"{name}: {len(images)} images of {frames} frames"
            source, *edits = (np.stack(images[k:k + frames]) for k in range(0, len(images), frames))
            if composited:
                photo_node = prompt[encode["inputs"]["pixels"][0]]
                with Image.open(Path(folder_paths.get_input_directory()) / photo_node["inputs"]["image"]) as file:
                    expected = np.asarray(file.convert("RGB")).copy()[None]
            else:
                expected = np.stack(decoded)
            difference = int(np.abs(source.astype(int) - expected.astype(int)).max())
            print(f"{name}: direct inversion {invert_id}: source ({frames} frame(s)) vs the loaded pixels' "
                  f"{'pixels' if composited else 'VAE round trip'}: {difference}/255")
            tolerance = 0 if composited else VIDEO_SOURCE_TOLERANCE if "LoadVideo" in loaders else SOURCE_TOLERANCE
            assert difference <= tolerance, \
                f"{name}: the source item is not the loaded pixels ({difference}/255)"
            for edit in edits:
                change = np.abs(edit.astype(int) - source.astype(int))
                print(f"{name}: the edit differs from the source by up to {int(change.max())}/255, "
                      f"{float(change.mean()):.2f}/255 on average")
                assert change.max() > 2, f"{name}: an edit is the source"
                if composited:
                    assert np.array_equal(edit[0][KEPT_ROWS], expected[0][KEPT_ROWS]), \
                        f"{name}: the edit changed the photo outside its mask"


def write_input_images(workflow: dict) -> None:
    """Write a deterministic 64x64 PNG (a smooth gradient with a square, transparent: Load Image's
    MASK) into ComfyUI's input directory for every LoadImage of the workflow, under the name it
    loads (validation checks it)."""
    import folder_paths
    from PIL import Image

    y, x = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    pixels = np.stack([x, y, 0.5 * (1 - x) + 0.25 * y], axis=-1)
    square = (slice(SIZE // 4, SIZE // 2 + 8), slice(SIZE // 3, 3 * SIZE // 4))
    pixels[square] = (0.9, 0.25, 0.1)
    alpha = np.ones((SIZE, SIZE, 1))
    alpha[square] = 0  # Load Image's MASK (1 - alpha): the square, as painted in its mask editor
    array = np.round(np.concatenate([pixels, alpha], axis=-1) * 255).astype(np.uint8)
    directory = Path(folder_paths.get_input_directory())
    for node in workflow["nodes"]:
        if node["type"] == "LoadImage" and node.get("mode", 0) == 0:
            path = directory / node["widgets_values"][0]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)


def write_input_videos(workflow: dict) -> None:
    """Write the test video (video_files.write_test_video: 5 frames of 64x64, a square moving
    right) into ComfyUI's input directory for every LoadVideo of the workflow, under the name it loads."""
    import folder_paths

    for node in workflow["nodes"]:
        if node["type"] == "LoadVideo" and node.get("mode", 0) == 0:
            video_files.write_test_video(Path(folder_paths.get_input_directory()) / node["widgets_values"][0])


def save_video_frames_as_pngs(prompt: dict) -> dict[str, str]:
    """Beside every node of VIDEO_OUTPUTS, a SaveImage of the same frames (PNG: lossless, where the
    video is not); returns {video node id: its SaveImage's id}."""
    beside = {}
    for node_id, node in list(prompt.items()):
        if node["class_type"] in VIDEO_OUTPUTS:
            beside[node_id] = f"{node_id}_frames"
            prompt[beside[node_id]] = {"class_type": "SaveImage",
                                       "inputs": {"images": node["inputs"]["images"], "filename_prefix": "frames"}}
    return beside


def save_blended_latents(prompt: dict) -> dict[str, str]:
    """For a workflow that loads a video and blends its edit (P2P Local Blend): Local Blend's
    threshold raised to VIDEO_BLEND_THRESHOLD, and a SaveLatent of what each sampler of a P2P Prompts
    batch makes; returns {sampler id: its SaveLatent's id}."""
    kinds = {node["class_type"] for node in prompt.values()}
    if "LoadVideo" not in kinds or BLEND_NODE not in kinds:
        return {}
    saves = {}
    for node_id, node in list(prompt.items()):
        if node["class_type"] == BLEND_NODE:
            node["inputs"]["threshold"] = VIDEO_BLEND_THRESHOLD
        latent = node["inputs"].get("latent_image")
        if isinstance(latent, list) and _source_class(prompt, latent) == "PromptEditP2PPrompts":
            saves[node_id] = f"{node_id}_latent"
            prompt[saves[node_id]] = {"class_type": "SaveLatent",
                                      "inputs": {"samples": [node_id, 0], "filename_prefix": "blended"}}
    return saves


def check_blend_confines_the_edit(outputs: dict, saves: dict[str, str], name: str) -> None:
    """In every latent frame, each cell of the edit is either the source's (to float32 roundoff: a
    cell the mask left late is the same denoised value reached from a different latent) or clearly
    moved, and each frame has both: Local Blend's mask is made and applied frame by frame in the
    workflow's own graph. (Compared in the latent: the random VAE's decoder spreads a change over
    the whole frame.)"""
    import folder_paths
    import safetensors.torch

    kept, moved = 1e-5, 1e-2  # the latent is of order one
    for sampler_id, save_id in saves.items():
        (entry,) = outputs[save_id]["latents"]
        path = Path(folder_paths.get_output_directory()) / entry.get("subfolder", "") / entry["filename"]
        source, edit = safetensors.torch.load_file(str(path))["latent_tensor"][:2]  # [C, F, H, W] each
        change = (edit - source).abs().amax(0)  # [F, H, W]
        for frame, frame_change in enumerate(change):
            outside, inside = frame_change <= kept, frame_change >= moved
            print(f"{name}: sampler {sampler_id}, latent frame {frame}: {float(outside.float().mean()):.0%} of the cells "
                  f"are the source's (up to {float(frame_change[outside].max()) if outside.any() else 0:.2g}), "
                  f"the others moved by at least {float(frame_change[inside].min()) if inside.any() else 0:.3g}")
            assert outside.any(), f"{name}: latent frame {frame}: the edit changed every cell (nothing outside the blend)"
            assert inside.any(), f"{name}: latent frame {frame}: the edit changed no cell"
            assert bool((outside | inside).all()), f"{name}: latent frame {frame}: cells half kept by the blend"


def check_videos_written(outputs: dict, beside: dict[str, str], name: str) -> None:
    """Each video node reported its file, written and not empty, in the output directory."""
    import folder_paths

    for node_id in beside:
        files = [entry for value in outputs.get(node_id, {}).values() if isinstance(value, (list, tuple))
                 for entry in value if isinstance(entry, dict) and "filename" in entry]
        assert files, f"{name}: the video node {node_id} reported no file: {outputs.get(node_id)!r}"
        for entry in files:
            path = Path(folder_paths.get_output_directory()) / entry.get("subfolder", "") / entry["filename"]
            assert path.is_file() and path.stat().st_size > 0, f"{name}: {path} was not written"


def write_embedding_vaes(workflow: dict, directory: Path) -> None:
    """An embedding VAE under the name of every Load Embedding VAE of the workflow."""
    for node in workflow["nodes"]:
        if node["type"] == LOAD_VAE_NODE:
            model_files.write_workflow_embedding_vae(directory / node["widgets_values"][0])


def link_clip_vision_files(workflow: dict, directory: Path) -> None:
    """The random-weight ViT-L/14 (model_files.make_clip_vision_file) under the name of every Load CLIP
    Vision of the workflow."""
    for node in workflow["nodes"]:
        if node["type"] == "CLIPVisionLoader":
            target = directory / node["widgets_values"][0]
            if not target.exists():
                target.symlink_to(model_files.make_clip_vision_file())


@pytest.fixture
def clip_vision_dir(comfy_nodes, tmp_path_factory, monkeypatch) -> Path:
    """Load CLIP Vision reads this tmp dir as its "clip_vision" model folder."""
    import folder_paths

    directory = tmp_path_factory.mktemp("clip_vision")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "clip_vision", ([str(directory)], {".safetensors"}))
    return directory


def _upstream(prompt: dict, link: list, wanted: str, through: str = "model") -> tuple[str, dict] | None:
    """Follow `link` and then each node's `through` input upstream to the first `wanted` node."""
    while isinstance(link, list):
        node_id = link[0]
        node = prompt[node_id]
        if node["class_type"] == wanted:
            return node_id, node
        link = node["inputs"].get(through)
    return None


def check_inversion_wiring(prompt: dict, name: str) -> int:
    """Every sampler whose MODEL passes through Apply Inversion (made by Invert Image in this
    workflow) samples the way the inversion reconstructs; returns how many samplers were checked."""
    checked = 0
    for node_id, node in prompt.items():
        inputs = node["inputs"]
        if "model" not in inputs or "latent_image" not in inputs:
            continue
        applied = _upstream(prompt, inputs["model"], APPLY_NODE)
        if applied is None:
            continue
        inverted = _upstream(prompt, applied[1]["inputs"]["inversion"], INVERT_NODE)
        if inverted is None:  # e.g. from Load Inversion: nothing in the workflow to compare with
            continue
        invert_id, invert = inverted[0], inverted[1]["inputs"]
        where = f"{name}: {node['class_type']} {node_id} (inversion from node {invert_id})"
        assert node["class_type"] == "KSamplerAdvanced", f"{where}: sample with KSamplerAdvanced"
        assert inputs["add_noise"] == "disable", f"{where}: add_noise must be disabled"
        assert inputs["sampler_name"] in EXACT_SAMPLERS, f"{where}: sampler {inputs['sampler_name']}"
        assert inputs["scheduler"] == invert["scheduler"], f"{where}: scheduler differs from the inversion's"
        assert inputs["steps"] == invert["steps"], f"{where}: steps differ from the inversion's"
        assert inputs["cfg"] == invert["guidance"], f"{where}: cfg differs from the inversion's guidance"
        assert inputs["start_at_step"] == 0 and inputs["end_at_step"] >= inputs["steps"], where
        assert inputs["return_with_leftover_noise"] == "disable", where
        assert inputs["negative"] == invert["negative"], f"{where}: negative is not the inversion's"
        latent, positive_link = inputs["latent_image"], inputs["positive"]
        if prompt[latent[0]]["class_type"] == KEEP_NODE:  # it repeats the latent it is given to [source, edit]
            latent = prompt[latent[0]]["inputs"]["latent"]
        description = prompt[invert["positive"][0]]["inputs"].get("text")
        for batching in (VARIATIONS_NODE, "PromptEditP2PPrompts"):  # each repeats the latent it is given
            if prompt[positive_link[0]]["class_type"] == batching:
                assert positive_link[0] == latent[0], f"{where}: positive and latent from different {batching}"
                batch_inputs = prompt[positive_link[0]]["inputs"]
                latent = batch_inputs["latent"]
                if batching == VARIATIONS_NODE:
                    positive_link = batch_inputs["positive"]
                else:
                    assert batch_inputs["source"].strip() == description.strip(), f"{where}: P2P source is not the description"
                    positive_link = None
        if positive_link is not None:
            assert positive_link == invert["positive"], f"{where}: positive is not the inversion's"
        assert latent == [invert_id, 0], f"{where}: latent is not the inversion's noisy_latent"
        checked += 1
    return checked


@pytest.fixture
def inversion_dir(comfy_nodes, tmp_path, monkeypatch) -> Path:
    """Save Inversion writes here: a tmp dir first among the "inversions" model folders (restored after)."""
    import folder_paths

    paths, extensions = folder_paths.folder_names_and_paths.get(INVERSION_FOLDER, ([], set()))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, INVERSION_FOLDER, (list(paths), extensions))
    folder_paths.add_model_folder_path(INVERSION_FOLDER, str(tmp_path), is_default=True)
    return tmp_path


@pytest.fixture
def embedding_vae_dir(comfy_nodes, tmp_path_factory, monkeypatch) -> Path:
    """Train/Load Embedding VAE use this tmp dir as their "embedding_vae" model folder."""
    import folder_paths

    directory = tmp_path_factory.mktemp("embedding_vae")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, EMBEDDING_VAE_FOLDER, ([str(directory)], {".safetensors"}))
    return directory


def _source_class(prompt: dict, value) -> str:
    return prompt[value[0]]["class_type"]


@pytest.fixture
def saved_tensors(comfy_nodes, monkeypatch):
    """The IMAGE tensors handed to SaveImage/PreviewImage (PNG pixels cannot show NaN or inf)."""
    recorded = []
    save_images = comfy_nodes.SaveImage.save_images

    def recording(self, images, *args, **kwargs):
        recorded.append(images.detach().float().cpu().clone())
        return save_images(self, images, *args, **kwargs)

    monkeypatch.setattr(comfy_nodes.SaveImage, "save_images", recording)
    return recorded


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_example_workflow_runs(path, comfy_nodes, sd15_checkpoint, saved_tensors, inversion_dir, embedding_vae_dir,
                              clip_vision_dir, mmdit_names, family_names, tiny_model_nodes):
    workflow = load_workflow(path)
    mappings = comfy_nodes.NODE_CLASS_MAPPINGS
    check_ui_format(workflow, mappings)
    assert any(node["type"] == "Note" for node in workflow["nodes"]), "every example explains itself in a Note"
    family = workflow_family(workflow)
    if family is not None and not host_has_family(family):
        return  # host_has_family asserted the pack's message naming the ComfyUI version that adds it

    write_input_images(workflow)
    write_input_videos(workflow)
    write_embedding_vaes(workflow, embedding_vae_dir)
    link_clip_vision_files(workflow, clip_vision_dir)
    prompt = ui_to_api(workflow, mappings)
    inverted_samplers = check_inversion_wiring(prompt, path.name)
    if any(node["class_type"] == APPLY_NODE for node in prompt.values()):
        assert inverted_samplers, f"{path.name}: Apply Inversion feeds no sampler that could be checked"
    replace_loaders_with_stand_ins(prompt)  # before the run, which would build a full-size T5-XXL
    prompt = shrink(prompt, sd15_checkpoint, mmdit_names, family_names)
    videos = save_video_frames_as_pngs(prompt)
    blended = save_blended_latents(prompt)
    output_nodes = {nid: node for nid, node in prompt.items() if node["class_type"] in IMAGE_OUTPUTS}
    assert output_nodes, "the workflow saves no image"

    start = time.perf_counter()
    outputs = workflows.run_api_prompt(prompt)
    elapsed = time.perf_counter() - start
    print(f"\n{path.name}: executed in {elapsed:.2f} s")

    for tensor in saved_tensors:
        assert bool(tensor.isfinite().all()), f"{path.name}: a saved image has non-finite pixels"
    check_videos_written(outputs, videos, path.name)
    check_blend_confines_the_edit(outputs, blended, path.name)

    for node_id, node in output_nodes.items():
        images = workflows.output_images(outputs, node_id)
        source = node["inputs"]["images"]
        assert images, f"{path.name}: {node['class_type']} {node_id} produced no image"
        for image in images:
            height, width = image.shape[:2]
            if _source_class(prompt, source) == MAPS_NODE:
                maps = prompt[source[0]]["inputs"]
                tile, per_row = maps["tile_size"], maps["tiles_per_row"]
                assert height % (tile + LABEL_HEIGHT) == 0, (path.name, node_id, image.shape, tile)
                assert width % tile == 0 and 1 <= width // tile <= per_row, (path.name, node_id, image.shape)
            else:
                assert (height, width) == (SIZE, SIZE), (path.name, node_id, image.shape)
            assert np.ptp(image) > 0, f"{path.name}: node {node_id} saved a constant image"
        if _source_class(prompt, source) == "VAEDecode":  # the whole P2P batch is saved
            latent = prompt[source[0]]["inputs"]["samples"]
            sampler = prompt[latent[0]]
            found = _upstream(prompt, sampler["inputs"]["positive"], "PromptEditP2PPrompts", through="conditioning")
            if found is not None:  # P2P Prompts' positive, maybe through FluxGuidance
                edits = [line for line in found[1]["inputs"]["edits"].splitlines() if line.strip()]
                frames = video_files.VIDEO_FRAMES if node_id in videos.values() else 1  # a video: each item's frames
                assert len(images) == (1 + len(edits)) * frames, (path.name, node_id, len(images))

    if any(node["class_type"] == MMDIT_LATENT_NODE for node in prompt.values()):
        check_source_is_plain_sampling(prompt, path.name, saved_tensors)
    check_direct_inversion_gives_back_the_photo(prompt, path.name, outputs)

    for node_id, node in prompt.items():
        if node["class_type"] == METRICS_NODE:
            texts = outputs.get(node_id, {}).get("text") or []
            assert len(texts) == 1, f"{path.name}: {METRICS_NODE} {node_id} showed {texts!r}"
            match = re.match(r"PSNR (\S+) dB, SSIM (\S+), latent MSE (\S+)$", texts[0])
            assert match, f"{path.name}: unexpected summary {texts[0]!r}"
            psnr_db, ssim, latent_mse = (float(value) for value in match.groups())
            print(f"{path.name}: node {node_id}: {texts[0]}")
            assert math.isfinite(psnr_db) and math.isfinite(ssim), texts[0]
            assert math.isfinite(latent_mse) and latent_mse > 0, f"{path.name}: latents not compared: {texts[0]}"
        if node["class_type"] in TRAIN_NODES and node["inputs"]["save_as"].strip():
            saved = embedding_vae_dir / f"{node['inputs']['save_as'].strip()}.safetensors"
            assert saved.is_file(), f"{path.name}: {saved} was not written"
        if node["class_type"] == SAVE_INVERSION_NODE:
            names = outputs.get(node_id, {}).get("text") or []
            assert len(names) == 1, f"{path.name}: {SAVE_INVERSION_NODE} {node_id} showed {names!r}"
            saved = inversion_dir / names[0]
            assert saved.is_file() and saved.stat().st_size > 0, f"{path.name}: {saved} was not written"
