"""ComfyUI Prompt Edit: Prompt-to-Prompt attention control, null-text inversion and stochastic
text embeddings for editing images with Stable Diffusion."""

import importlib.util

if importlib.util.find_spec("comfy") is None:
    # Imported outside ComfyUI (a test runner collecting the repo): the core packages work,
    # there are no nodes to register.
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# Served to the frontend: docs/<NodeName>.md are the node library's help pages (nodes/help_pages.py).
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
