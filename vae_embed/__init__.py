"""Embedding VAE for stochastic null-text / conditional embeddings (see the stochastic-embedding
paper), in plain torch; ``comfy_training`` is the module that meets ComfyUI (training through a
loaded ComfyUI model, CLIP and VAE)."""
