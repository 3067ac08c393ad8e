"""ComfyUI Prompt Edit: Prompt-to-Prompt attention control, null-text inversion and stochastic
text embeddings for editing images with Stable Diffusion."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
