"""What every feature of the pack stands on (plain torch, never ``comfy``): the error base,
safetensors files, model fingerprints and image metrics."""
