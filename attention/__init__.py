"""Prompt-to-Prompt attention control, host-agnostic (plain torch); it meets ComfyUI in
``families/`` (one installer per kind of attention, one row per model family), through
``patching/`` (composing with other nodes' patches, reading a model call's step and chunks)."""
