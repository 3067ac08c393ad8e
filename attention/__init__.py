"""Prompt-to-Prompt attention control, host-agnostic (plain torch) except ``comfy_patch``."""
