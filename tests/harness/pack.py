"""The pack as the tests see it: where its source is, the package name it is imported under,
importing it without ComfyUI, what its runtime source consists of, and the per-user cache the
tests write generated files to."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The pack's package directory (the repository root)."""
PACK = "comfyui_prompt_edit"
RUNTIME_PACKAGES = ("__init__.py", "attention", "base", "inversion", "vae_embed", "patching", "families", "nodes", "evaluation")
"""The files and folders of ROOT that the pack runs from (the rest is tests, tools and docs)."""
HOST_MODULES = {"comfy", "comfy_api", "folder_paths", "nodes", "server", "node_helpers", "comfy_extras"}
"""Top-level modules that ComfyUI itself provides."""


def import_pack(execute_init: bool) -> types.ModuleType:
    """Make `import comfyui_prompt_edit` resolve to the repository root and return the package.

    execute_init=False registers a bare package (no __init__ run, so no ComfyUI needed) through
    which submodules such as `comfyui_prompt_edit.attention.tokens` import normally.
    execute_init=True runs __init__.py, into the bare module if one exists, so submodules that
    were imported already stay the same objects. Without an __init__.py the package stays bare.
    If __init__ raises, the package is left bare and the exception propagates.
    """
    module = sys.modules.get(PACK)
    if module is None:
        spec = importlib.machinery.ModuleSpec(PACK, None, is_package=True)
        spec.submodule_search_locations = [str(ROOT)]
        module = importlib.util.module_from_spec(spec)
        module.__path__ = [str(ROOT)]
        module._harness_initialised = False
        sys.modules[PACK] = module
    if not execute_init or getattr(module, "_harness_initialised", True):
        return module
    init_file = ROOT / "__init__.py"
    if not init_file.is_file():
        return module
    spec = importlib.util.spec_from_file_location(PACK, init_file, submodule_search_locations=[str(ROOT)])
    bare_spec, bare_loader = module.__spec__, module.__loader__
    module.__spec__, module.__file__, module.__loader__ = spec, str(init_file), spec.loader
    try:
        spec.loader.exec_module(module)
    except BaseException:
        module.__spec__, module.__loader__ = bare_spec, bare_loader
        del module.__file__
        raise
    module._harness_initialised = True
    return module


def cache_dir() -> Path:
    """Per-user cache for generated files ($XDG_CACHE_HOME or ~/.cache), never inside the repo."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = (base / PACK).resolve()
    if path.is_relative_to(ROOT):
        raise RuntimeError(f"cache dir {path} is inside the repository {ROOT}")
    return path
