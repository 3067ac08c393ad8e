"""What the pack's three patch families (P2P, Apply Inversion, Stochastic Embeddings) share in
how they sit on a ComfyUI model: composing with the attention patches other nodes installed
(``compose``, plain Python) and installing onto a ``ModelPatcher`` (``comfy_model``)."""
