"""Real-image inversion in ComfyUI's k-space: DDIM, null-text and direct inversion in plain torch
(``ddim``, ``null_text``, ``direct``, ``result``); ``comfy_model`` (the model as a differentiable ε
function) and ``comfy_patch`` (the sampler patch of Apply Inversion, which asks ``families`` how
the model takes it and installs through ``patching``) are its modules that meet ComfyUI."""
