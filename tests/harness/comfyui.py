"""ComfyUI in the test process: finding an install, initialising it headless on the CPU with the
pack's nodes registered as the server's loader would, and calling nodes and text encoders as a
workflow does. Nothing is mocked: the nodes are ComfyUI's own."""

from __future__ import annotations

import asyncio
import atexit
import logging
import shutil
import socket
import sys
import tempfile
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

import comfy_cli
from harness.pack import PACK, import_pack

if TYPE_CHECKING:  # ComfyUI is importable only after ensure_comfyui()
    import comfy.sd

SKIP_REASON = (
    "ComfyUI not found: set COMFYUI_PATH, install the pack under ComfyUI/custom_nodes, "
    "or put ComfyUI at ~/ComfyUI"
)

_state: dict[str, Any] = {"nodes": None, "pack_error": None}


def find_comfyui() -> tuple[Path | None, str]:
    """Return (ComfyUI root, "") or (None, why not).

    Order: $COMFYUI_PATH, the ComfyUI whose custom_nodes/ holds this checkout, ~/ComfyUI
    (scripts/comfy_cli.py, as the command-line tools look; PROMPT_EDIT_NO_COMFYUI=1 keeps only
    $COMFYUI_PATH). A candidate that is not a ComfyUI root (nodes.py + comfy/) is passed over.
    """
    candidates = comfy_cli.comfyui_candidates()
    for _, path in candidates:
        if comfy_cli.is_comfyui_root(path):
            return path.resolve(), ""
    return None, f"{SKIP_REASON} (tried {'; '.join(f'{label}: {path}' for label, path in candidates)})"


def ensure_comfyui() -> types.ModuleType:
    """Initialise ComfyUI headless on the CPU once and return its `nodes` module.

    Its input, output and temp folders are a temporary directory of the session. Also registers the pack's nodes the way the server's loader does, so the executor and
    validator know them. A pack that fails to import is logged and recorded (see
    `pack_import_error`), as the server would: stock nodes stay usable.
    """
    if _state["nodes"] is not None:
        return _state["nodes"]
    root, reason = find_comfyui()
    if root is None:
        raise RuntimeError(reason)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if "comfy.model_management" in sys.modules:
        logging.warning("comfy.model_management was imported before ensure_comfyui(); CPU mode may not apply")
    from comfy.cli_args import args

    args.cpu = True  # read by comfy.model_management at import
    import folder_paths
    # ComfyUI's `utils` package first, as main.py imports it: on 0.3.64 importing `nodes` binds the
    # name `utils` to comfy/utils.py otherwise, and comfy_extras/nodes_images.py (ImageFromBatch,
    # SaveAnimatedWEBP ...) then fails to import server.py ("'utils' is not a package").
    import utils.extra_config  # noqa: F401
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    session_dir = Path(tempfile.mkdtemp(prefix=f"{PACK}_"))
    atexit.register(shutil.rmtree, session_dir, ignore_errors=True)
    for kind, setter in (
        ("output", folder_paths.set_output_directory),
        ("temp", folder_paths.set_temp_directory),
        ("input", folder_paths.set_input_directory),
    ):
        (session_dir / kind).mkdir()
        setter(str(session_dir / kind))
    _state["nodes"] = nodes
    try:
        _register_pack_nodes(nodes, import_pack(execute_init=True))
    except Exception as error:  # the server also keeps running without a broken pack
        logging.exception("%s failed to import; only stock nodes are registered", PACK)
        _state["pack_error"] = error
    return nodes


def pack_import_error() -> BaseException | None:
    """The exception the pack's __init__ raised in ensure_comfyui(), if any."""
    return _state["pack_error"]


def is_initialised() -> bool:
    """Whether ensure_comfyui() has run in this process (ComfyUI's modules are importable)."""
    return _state["nodes"] is not None


def _register_pack_nodes(nodes: types.ModuleType, pack: types.ModuleType) -> None:
    """Mirror nodes.load_custom_node: V1 mappings first, else a V3 comfy_entrypoint; names that
    collide with built-in nodes are skipped (the server ignores them too, so warn)."""
    class_mappings = getattr(pack, "NODE_CLASS_MAPPINGS", None)
    display_names = getattr(pack, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
    if class_mappings is None and hasattr(pack, "comfy_entrypoint"):
        class_mappings, display_names = asyncio.run(_v3_mappings(pack.comfy_entrypoint))
    for name, cls in (class_mappings or {}).items():
        existing = nodes.NODE_CLASS_MAPPINGS.get(name)
        if existing is not None and existing is not cls:
            logging.warning("%s node %r shadows a built-in node; the server would skip it", PACK, name)
            continue
        nodes.NODE_CLASS_MAPPINGS[name] = cls
        cls.RELATIVE_PYTHON_MODULE = f"custom_nodes.{PACK}"
    nodes.NODE_DISPLAY_NAME_MAPPINGS.update(display_names)


async def _v3_mappings(entrypoint: Any) -> tuple[dict[str, type], dict[str, str]]:
    extension = entrypoint()
    if asyncio.iscoroutine(extension):
        extension = await extension
    classes, names = {}, {}
    for cls in await extension.get_node_list():
        schema = cls.GET_SCHEMA()
        classes[schema.node_id] = cls
        if schema.display_name is not None:
            names[schema.node_id] = schema.display_name
    return classes, names


def run_node(cls: type, *args: Any) -> Any:
    """First output of a node class, whether it is written for the V1 or the V3 node API."""
    if hasattr(cls, "execute"):
        out = cls.execute(*args)
        return out.result[0] if hasattr(out, "result") else out[0]
    return getattr(cls(), cls.FUNCTION)(*args)[0]


def encode(clip: comfy.sd.CLIP, text: str) -> list:
    """CONDITIONING for `text`, exactly as CLIPTextEncode builds it."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a ComfyUI server of a test's own)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
