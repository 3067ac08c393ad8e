"""P2P Attention Maps: per-token cross-attention maps of a finished P2P run, as an image grid."""

from __future__ import annotations

from ..attention.edit_handle import EditHandle
from ..attention.errors import P2PInputError
from ..attention.map_store import PLACES
from ..attention.visualize import FRAME_MODES, item_frames, render_maps
from .common import CATEGORY_P2P, P2P_ATTENTION

WHERE = {"input+output": PLACES, "input": ("input",), "output": ("output",)}


class P2PAttentionMaps:
    DESCRIPTION = (
        "Shows the cross-attention map of every word of one prompt of the P2P batch, averaged over "
        "the coarse UNet layers (16×16 for a 512² SD1.5 image) and the chosen steps of the last run. "
        "On joint-attention models (Flux, SD3, Qwen-Image, …): the image→text attention of the blocks "
        "that record maps (Flux's double, SD3's joint), one map per image token "
        "(64×64 for a 1024² image). A video (Wan) records one map per latent frame: shown averaged "
        "over the frames, as a grid with a row per frame, or as one image per frame (an animation)."
    )
    CATEGORY = CATEGORY_P2P
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("maps",)
    OUTPUT_TOOLTIPS = ("One tile per token, labelled with the token (a video's 'per frame': one such "
                       "image per latent frame).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "attention": (P2P_ATTENTION, {"tooltip": "From 'P2P Attention Control'."}),
                "samples": ("LATENT", {
                    "tooltip": "The sampler's output: the maps are read after this sampling run."}),
                "item": ("INT", {
                    "default": 0, "min": 0, "max": 63,
                    "tooltip": "Batch item: 0 = source prompt, 1.. = edited prompts."}),
                "layers": (list(WHERE), {
                    "default": "input+output",
                    "tooltip": "Which coarse layers to average (down = input, up = output); joint-attention models "
                               "always average the blocks their family records maps in."}),
                "step_start": ("FLOAT", {
                    "default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "First fraction of the steps to average."}),
                "step_end": ("FLOAT", {
                    "default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "Last fraction of the steps to average."}),
                "include_special": ("BOOLEAN", {
                    "default": False, "tooltip": "Also show the start and end tokens."}),
                "tile_size": ("INT", {
                    "default": 128, "min": 32, "max": 512, "step": 16, "tooltip": "Pixel size of one tile."}),
                "tiles_per_row": ("INT", {
                    "default": 8, "min": 1, "max": 64, "tooltip": "Tiles per row of the grid."}),
            },
            "optional": {
                "images": ("IMAGE", {
                    "tooltip": "Decoded images of the batch: the maps are laid over the item's image (a "
                               "video's: over the pixel frame at each latent frame's time; 'average': the "
                               "middle one)."}),
                "frames": (list(FRAME_MODES), {
                    "default": "average",
                    "tooltip": "Video models (Wan): 'average' = one grid of the maps averaged over the "
                               "frames; 'grid' = a table with a row per latent frame ('frame k') and a "
                               "column per token; 'per frame' = one image per latent frame, a batch for "
                               "Save Animated WEBP / PNG (Wan: at a quarter of the video's frame rate). "
                               "Images show the same single grid for every choice."}),
            },
        }

    def render(self, attention: EditHandle, samples, item: int, layers: str, step_start: float, step_end: float,
               include_special: bool, tile_size: int, tiles_per_row: int, images=None, frames: str = "average"):
        edit = attention.edit
        if item >= edit.batch_size:
            raise P2PInputError(f"item: {item} is past the batch of {edit.batch_size} prompts (0 = source)")
        if layers not in WHERE:
            raise P2PInputError(f"layers: {layers!r} is not one of {list(WHERE)}")
        if frames not in FRAME_MODES:
            raise P2PInputError(f"frames: {frames!r} is not one of {list(FRAME_MODES)}")
        if step_start >= step_end:
            raise P2PInputError("step_start / step_end: start must be below end")
        if attention.store.empty:
            raise P2PInputError(
                "attention: no maps were recorded; sample with the MODEL of this 'P2P Attention Control' first")
        prompt = edit.source if item == 0 else edit.targets[item - 1]
        places = attention.map_places(WHERE[layers])
        maps = attention.store.average(places, step_start, step_end)[item]  # a video's: [frames, rows, columns, words]
        columns = [c for w in prompt.words for c in w.columns]
        if include_special:
            columns = sorted(set(columns) | set(prompt.start_end_columns()))
        labels = prompt.token_labels()
        pictures = None
        if images is not None and maps.ndim == 4 and maps.shape[0] > 1:
            pictures = item_frames(images, edit.batch_size, item, maps.shape[0])
        elif images is not None:
            pictures = images[min(item, images.shape[0] - 1)]
        grid = render_maps(maps.cpu(), attention.store.column_index(columns), [labels[c] for c in columns],
                           tile_size, tiles_per_row, frames, pictures)
        return (grid,)
