"""What the pack's three patch families (P2P, Apply Inversion, Stochastic Embeddings) share in
how they sit on a ComfyUI model: composing with the attention and block patches other nodes installed
(``compose``, plain Python), installing onto a ``ModelPatcher`` (``comfy_model``) and reading a model
call's ``transformer_options``: its sampling step and which rows are which chunk (``sampling_call``)."""
