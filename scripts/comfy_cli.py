"""Running ComfyUI headless from the pack's command-line tools (and the test harness): find an
install, start it with this pack registered, and execute an API prompt as the server's worker does."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import sys
import uuid
from pathlib import Path
from typing import Any

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK = "comfyui_prompt_edit"


class WorkflowError(RuntimeError):
    """A prompt failed validation or execution; the message lists what and where."""


def comfyui_candidates(explicit: str | None = None) -> list[tuple[str, Path]]:
    """Where ComfyUI is looked for, in order: the given path, $COMFYUI_PATH, the ComfyUI whose
    custom_nodes/ holds this pack, ~/ComfyUI. PROMPT_EDIT_NO_COMFYUI=1 (``scripts/test.sh --host
    none``) leaves out the last two, so that the pure-torch tests run with no ComfyUI reachable."""
    candidates = [("--comfyui", Path(explicit).expanduser())] if explicit else []
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(("COMFYUI_PATH", Path(os.environ["COMFYUI_PATH"]).expanduser()))
    if os.environ.get("PROMPT_EDIT_NO_COMFYUI") == "1":
        return candidates
    if PACK_ROOT.parent.name == "custom_nodes":
        candidates.append(("host of custom_nodes", PACK_ROOT.parent.parent))
    candidates.append(("home", Path.home() / "ComfyUI"))
    return candidates


def is_comfyui_root(path: Path) -> bool:
    return (path / "nodes.py").is_file() and (path / "comfy").is_dir()


def find_comfyui(explicit: str | None = None) -> Path:
    candidates = comfyui_candidates(explicit)
    for _, path in candidates:
        if is_comfyui_root(path):
            return path.resolve()
    tried = ", ".join(f"{label}: {path}" for label, path in candidates)
    raise SystemExit(f"ComfyUI not found (tried {tried}); pass --comfyui or set COMFYUI_PATH")


def import_pack():
    """This repository as the package ``comfyui_prompt_edit`` (its __init__ run), whatever its folder name."""
    if PACK in sys.modules and hasattr(sys.modules[PACK], "NODE_CLASS_MAPPINGS"):
        return sys.modules[PACK]
    spec = importlib.util.spec_from_file_location(PACK, PACK_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(PACK_ROOT)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = package
    spec.loader.exec_module(package)
    return package


def start_comfyui(root: Path, cpu: bool, extra_nodes: bool = True):
    """Import ComfyUI headless (on the CPU if ``cpu``), load its built-in extra nodes if asked, and
    register this pack's nodes; return ComfyUI's ``nodes`` module."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = cpu  # read by comfy.model_management at import
    import nodes

    if extra_nodes:
        load_extra_nodes(nodes)
    package = import_pack()
    nodes.NODE_CLASS_MAPPINGS.update(package.NODE_CLASS_MAPPINGS)
    nodes.NODE_DISPLAY_NAME_MAPPINGS.update(package.NODE_DISPLAY_NAME_MAPPINGS)
    return nodes


def load_extra_nodes(nodes) -> None:
    """ComfyUI's built-in nodes beyond nodes.py (comfy_extras/: a third of the start-up time)."""
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))


def has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


class StubServer:
    """What PromptExecutor needs of PromptServer; records every message it is sent."""

    def __init__(self) -> None:
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.sockets_metadata: dict = {}
        self.messages: list[tuple[str, Any]] = []

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        self.messages.append((event, data))

    def queue_updated(self) -> None:
        pass


def format_node_errors(node_errors: dict) -> str:
    lines = []
    for node_id, entry in node_errors.items():
        lines.append(f"node {node_id} ({entry.get('class_type')}):")
        for error in entry.get("errors", []):
            lines.append(f"  - {error.get('message')}: {error.get('details')}")
    return "\n".join(lines)


def new_executor():
    """(PromptExecutor with the CLASSIC cache, its StubServer)."""
    import execution

    server = StubServer()
    options: dict[str, Any] = {"cache_type": execution.CacheType.CLASSIC}
    if "cache_args" in inspect.signature(execution.PromptExecutor).parameters:
        # Since ComfyUI 0.3.67 the executor reads its cache sizes from this dict (None fails inside
        # execution.py); these are the values main.py passes for --cache-classic.
        options["cache_args"] = {"lru": 0, "ram": 0, "ram_inactive": 0}
    return execution.PromptExecutor(server, **options), server


def execute_prompt(prompt: dict, executor=None, server: StubServer | None = None,
                   extra_data: dict | None = None) -> dict:
    """Validate and execute an API prompt; return the history outputs. Raises WorkflowError with
    the validation errors or the failing node's exception. The executor enters inference mode itself."""
    import execution

    if executor is None:
        executor, server = new_executor()
    prompt_id = uuid.uuid4().hex
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    if not valid or node_errors:
        summary = f"{error['message']}: {error['details']}\n" if error else ""
        raise WorkflowError(f"prompt failed validation\n{summary}{format_node_errors(node_errors)}")
    server.messages.clear()
    server.last_prompt_id = prompt_id
    # A client id makes the executor send its execution_* messages to the stub.
    executor.execute(prompt, prompt_id, {"client_id": "comfy_cli", **(extra_data or {})}, outputs)
    events = dict(server.messages)
    if "execution_error" in events:
        e = events["execution_error"]
        raise WorkflowError(
            f"{e['node_type']} (node {e['node_id']}) raised {e['exception_type']}: {e['exception_message']}\n"
            + "".join(e.get("traceback") or []))
    if "execution_interrupted" in events or "execution_success" not in events or not executor.success:
        raise WorkflowError(f"prompt did not finish: {[event for event, _ in server.messages]}")
    return executor.history_result["outputs"]
