"""The one client of ComfyUI's HTTP API that the command-line tools share (queue_variations.py,
batch_edit.py): plain urllib, every request bounded by a timeout, errors that name the server and,
for a failed run, the failing node."""

from __future__ import annotations

import json
import mimetypes
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from workflow_api import FRONTEND_ONLY_NODES, is_api_format, ui_to_api


class ServerError(RuntimeError):
    """The server refused a request or a run failed; the message says which and why."""


class ServerUnreachable(ServerError):
    """No answer from the server at all (not started, died, wrong address)."""


class RunFailed(ServerError):
    """The server ran the prompt and it failed or was interrupted."""


class Server:
    """The parts of ComfyUI's HTTP API the scripts use; every request is bounded by ``timeout``."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def __repr__(self) -> str:
        return self.url

    def _request(self, path: str, data: bytes | None = None, content_type: str = "application/json") -> bytes:
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise ServerError(f"{self.url}{path}: the server answered {error.code}: {explain(detail)}") from None
        except (urllib.error.URLError, OSError) as error:
            raise ServerUnreachable(f"cannot reach the ComfyUI server at {self.url} "
                                    f"({getattr(error, 'reason', error)}); start it or pass --server") from None

    def json(self, path: str, body: dict | None = None):
        return json.loads(self._request(path, None if body is None else json.dumps(body).encode()))

    def image(self, entry: dict) -> bytes:
        """The bytes of one image of a history output entry (filename, subfolder, type)."""
        query = urllib.parse.urlencode({k: entry.get(k, "") for k in ("filename", "subfolder", "type")})
        return self._request(f"/view?{query}")

    def upload_image(self, name: str, data: bytes) -> str:
        """Put an image into the server's input folder (overwriting one of that name); return the
        name LoadImage takes."""
        boundary = uuid.uuid4().hex
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                 f"Content-Type: {kind}\r\n\r\n".encode(), data,
                 f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue'
                 f"\r\n--{boundary}--\r\n".encode()]
        answer = json.loads(self._request("/upload/image", b"".join(parts), f"multipart/form-data; boundary={boundary}"))
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def queue_length(self) -> int:
        """Prompts running or waiting on the server (all clients')."""
        queue = self.json("/queue")
        return len(queue.get("queue_running", [])) + len(queue.get("queue_pending", []))

    def post_prompt(self, prompt: dict, client_id: str) -> str:
        return self.json("/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]

    def result(self, prompt_id: str) -> dict | None:
        """The outputs of a finished prompt, None while it is queued or running; RunFailed names
        the node where it failed or was interrupted."""
        history = self.json(f"/history/{prompt_id}")
        if prompt_id not in history:
            return None
        entry = history[prompt_id]
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            raise RunFailed(failure_message(status.get("messages") or [], entry.get("prompt")))
        return entry.get("outputs", {})

    def wait(self, prompt_id: str, timeout: float, poll: float = 0.05) -> dict:
        """Poll /history until the prompt finished (starting fast, backing off to 0.5 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outputs = self.result(prompt_id)
            if outputs is not None:
                return outputs
            time.sleep(poll)
            poll = min(poll * 1.5, 0.5)
        raise ServerError(f"{self.url}: no result for prompt {prompt_id} within --timeout ({timeout:g} s); "
                          "the server may be busy or stuck")


def failure_message(messages: list, prompt: list | None = None) -> str:
    """Why a run failed, from its history status messages: the failing (or interrupted) node by
    class and id, and the exception."""
    events = {event: data for event, data in messages if isinstance(data, dict)}
    classes = {}
    if isinstance(prompt, list) and len(prompt) > 2 and isinstance(prompt[2], dict):
        classes = {node_id: node.get("class_type") for node_id, node in prompt[2].items()}
    if "execution_error" in events:
        detail = events["execution_error"]
        node = _node_name(detail, classes)
        return (f"the run failed in {node}: {detail.get('exception_type', 'error')}: "
                f"{detail.get('exception_message') or 'see the server log'}")
    if "execution_interrupted" in events:
        detail = events["execution_interrupted"]
        where = f" in {_node_name(detail, classes)}" if detail.get("node_id") is not None else ""
        return f"the run was interrupted{where} (cancelled on the server, or the server was stopped)"
    return f"the run failed without an error message (events: {[event for event, _ in messages]}); see the server log"


def _node_name(detail: dict, classes: dict) -> str:
    node_id = detail.get("node_id")
    node_type = detail.get("node_type") or classes.get(node_id) or "an unknown node"
    return f"{node_type} (node {node_id})" if node_id is not None else node_type


def explain(detail: str) -> str:
    """The readable part of an error answer of /prompt (its node_errors) or of any other route."""
    try:
        body = json.loads(detail)
    except ValueError:
        return detail[:500]
    if not isinstance(body, dict):
        return detail[:500]
    lines = [body.get("error", {}).get("message", "")] if isinstance(body.get("error"), dict) else []
    for node_id, entry in (body.get("node_errors") or {}).items():
        for error in entry.get("errors", []):
            lines.append(f"node {node_id} ({entry.get('class_type')}): {error.get('message')}: {error.get('details')}")
    return "; ".join(line for line in lines if line) or detail[:500]


class _InputSpec:
    """Stands in for a node class in ui_to_api: its INPUT_TYPES from the server's /object_info."""

    def __init__(self, info: dict) -> None:
        self.info = info

    def INPUT_TYPES(self) -> dict:  # noqa: N802 (ComfyUI's name)
        return self.info.get("input", {})


def api_prompt(workflow: dict, object_info: dict) -> dict:
    """The workflow as an API prompt, checked against the node types the server knows."""
    types = ({node["class_type"] for node in workflow.values()} if is_api_format(workflow)
             else {node["type"] for node in workflow["nodes"]})
    unknown = sorted(types - set(object_info) - FRONTEND_ONLY_NODES)
    if unknown:
        raise ServerError(f"the server does not know the node types {unknown}; install the custom nodes that provide them")
    if is_api_format(workflow):
        return workflow
    return ui_to_api(workflow, {name: _InputSpec(info) for name, info in object_info.items()})
