"""Real-image inversion in ComfyUI's k-space (plain torch): DDIM inversion and null-text inversion."""
