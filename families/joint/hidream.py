"""HiDream (I1): refused. Its double blocks attend over ``[image, T5, Llama(last), Llama(layer i)]``,
image first and with a different Llama layer as text in every block, and its attention calls carry
no block identity (no ``dit`` patches, nothing block-related in the options): an edit would have to
count calls to know which text columns a call holds, and break with any change of ComfyUI's loop."""

from __future__ import annotations

from ..registry import RefusedFamily

HIDREAM = RefusedFamily(
    name="HiDream", model_classes=("HiDream",),
    reason="its blocks put the image before the text and read a different Llama layer as text in each block, "
           "and ComfyUI tells the attention no block identity, so the pack cannot say which columns are which "
           "words; edit with another model (Flux.1, Flux.2, Qwen-Image, SD3.5 …)")
