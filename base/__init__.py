"""What every feature of the pack stands on (plain torch, never ``comfy``): the error base
(``errors``), word lists as users type them (``word_lists``), safetensors files
(``safetensors_io``), model fingerprints (``fingerprint``), image metrics (``image_metrics``) and
which sampling step a σ is (``sigma_steps``)."""
