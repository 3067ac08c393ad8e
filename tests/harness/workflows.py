"""Executing API prompts in the test process as the server's worker does (ComfyUI's real
validator and executor, through scripts/comfy_cli.py like the command-line tools), and reading back
the images they saved. Reading workflow files and converting the UI format is
scripts/workflow_api.py's (tests import it directly)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import comfy_cli
import numpy as np

from harness.comfyui import ensure_comfyui

_state: dict[str, Any] = {"executor": None, "server": None}
"""The session's executor and its stub server (run_api_prompt)."""


def run_api_prompt(prompt: dict, fresh_executor: bool = False, extra_data: dict | None = None) -> dict:
    """Validate and execute an API prompt as the server's worker does; return history outputs.

    One executor (CLASSIC cache) is kept per session, so an unchanged node is served from the
    cache on a later run just as in the server; fresh_executor=True runs on an empty cache.
    Raises AssertionError with the validation errors or with the failing node's exception.
    """
    ensure_comfyui()
    if fresh_executor or _state["executor"] is None:
        executor, server = comfy_cli.new_executor()
        if not fresh_executor:
            _state["executor"], _state["server"] = executor, server
    else:
        executor, server = _state["executor"], _state["server"]
    try:
        return comfy_cli.execute_prompt(prompt, executor, server, {"client_id": "harness", **(extra_data or {})})
    except comfy_cli.WorkflowError as error:
        raise AssertionError(str(error)) from None


def output_images(outputs: dict, node_id: str | None = None) -> list[np.ndarray]:
    """Images (H, W, C uint8 arrays) that SaveImage/PreviewImage nodes reported in `outputs`
    (all nodes, or only `node_id`), read back from disk."""
    selected = [outputs[node_id]] if node_id is not None else list(outputs.values())
    return [read_output_image(entry) for output in selected for entry in output.get("images", [])]


def read_output_image(entry: dict) -> np.ndarray:
    """Read one {"filename", "subfolder", "type"} entry as an (H, W, C) uint8 array."""
    ensure_comfyui()
    import folder_paths
    from PIL import Image

    directory = folder_paths.get_directory_by_type(entry.get("type", "output"))
    if directory is None:
        raise ValueError(f"unknown image type {entry.get('type')!r}")
    with Image.open(Path(directory) / entry.get("subfolder", "") / entry["filename"]) as image:
        return np.asarray(image).copy()
