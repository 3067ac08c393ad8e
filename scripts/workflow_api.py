"""ComfyUI workflow files: read them and convert the UI format into the API prompt the frontend
would queue. Plain Python (no ComfyUI import): the node classes are passed in. Shared by the test
harness, scripts/run_workflow.py and scripts/queue_variations.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FRONTEND_ONLY_NODES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
_MODE_MUTED, _MODE_BYPASSED = 2, 4
_WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
_UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload")


def load_workflow(path: Path | str) -> dict:
    """Read a workflow (UI or API format) from a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _widget_slots(name: str, spec: tuple | list) -> int:
    """How many widgets_values entries an input occupies in the frontend's UI format (0: socket).

    Widgets are the primitive types and combos, unless forceInput. An INT gets a control widget
    ("randomize", ...) when control_after_generate is set or, if it is unset, when it is named
    seed/noise_seed (frontend useIntWidget). A combo with control_after_generate gets the control
    and a filter-list widget (addValueControlWidgets). Upload combos (LoadImage) add their button,
    whose value ("image") is saved too.
    """
    input_type = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    is_combo = isinstance(input_type, (list, tuple)) or input_type == "COMBO"
    if options.get("forceInput") or not (is_combo or input_type in _WIDGET_TYPES):
        return 0
    control = options.get("control_after_generate")
    if input_type == "INT":
        return 2 if (name in ("seed", "noise_seed") if control is None else control) else 1
    if is_combo:
        return 1 + (2 if control else 0) + (1 if any(options.get(f) for f in _UPLOAD_FLAGS) else 0)
    return 1


def _link_origins(workflow: dict) -> dict[int, tuple[int, int]]:
    """link id -> (origin node id, origin slot), from either schema's link records."""
    origins = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            origins[link["id"]] = (link["origin_id"], link["origin_slot"])
        else:
            origins[link[0]] = (link[1], link[2])
    return origins


def _widget_inputs(node: dict, input_types: dict) -> dict[str, Any]:
    """The node's widget values by input name, assigned positionally to INPUT_TYPES' widgets."""
    values = node.get("widgets_values") or []
    if not isinstance(values, list):
        raise NotImplementedError(f"node {node['id']} ({node['type']}): widgets_values is not a list")
    inputs: dict[str, Any] = {}
    position = 0
    for section in ("required", "optional"):
        for name, spec in (input_types.get(section) or {}).items():
            slots = _widget_slots(name, spec)
            if slots and position < len(values):
                inputs[name] = values[position]
            position += slots
    if position != len(values):
        raise ValueError(
            f"node {node['id']} ({node['type']}): widgets_values has {len(values)} entries but its "
            f"widgets take {position}: {values!r}"
        )
    return inputs


def ui_to_api(workflow: dict, node_class_mappings: dict) -> dict:
    """Convert a UI-format workflow (schema 0.4 or 1) into the API prompt the frontend would queue.

    - widgets_values are assigned positionally to the widget inputs of INPUT_TYPES (required, then
      optional; V1 and V3 classes alike), skipping control/filter/upload entries (_widget_slots).
      A count mismatch raises ValueError rather than shifting values silently.
    - A link on an input (also on a widget converted to a socket) wins over the widget value.
    - Muted nodes (mode 2) are dropped with their links. Bypassed nodes (mode 4) pass through
      the input of the output's type, preferring the same slot index, like the frontend.
    - Note/MarkdownNote are dropped, Reroutes followed, PrimitiveNode values copied into targets.
    - Not done: `_meta` titles, dynamic-prompt expansion of `{a|b}` text, subgraphs, group nodes.
    """
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise NotImplementedError("ui_to_api: workflows with subgraphs are not supported")
    nodes_by_id = {node["id"]: node for node in workflow["nodes"]}
    links = _link_origins(workflow)

    def source(link_id: int) -> tuple[str, int] | tuple[None, Any] | None:
        """(node id, slot) feeding the link, (None, value) for a PrimitiveNode, None if cut."""
        origin_id, origin_slot = links[link_id]
        origin = nodes_by_id[origin_id]
        if origin["type"] == "Reroute":
            upstream = (origin.get("inputs") or [{}])[0].get("link")
            return None if upstream is None else source(upstream)
        if origin["type"] == "PrimitiveNode":
            return None, origin["widgets_values"][0]
        if origin.get("mode") == _MODE_MUTED:
            return None
        if origin.get("mode") == _MODE_BYPASSED:
            wanted = origin["outputs"][origin_slot]["type"]
            inputs = origin.get("inputs") or []
            for index in [origin_slot, *range(len(inputs))]:
                if index < len(inputs) and inputs[index].get("type") == wanted:
                    upstream = inputs[index].get("link")
                    return None if upstream is None else source(upstream)
            return None
        return str(origin_id), origin_slot

    prompt = {}
    for node in workflow["nodes"]:
        class_type = node["type"]
        if class_type in FRONTEND_ONLY_NODES or node.get("mode") in (_MODE_MUTED, _MODE_BYPASSED):
            continue
        if class_type not in node_class_mappings:
            raise KeyError(f"node {node['id']}: unknown node type {class_type!r}")
        inputs = _widget_inputs(node, node_class_mappings[class_type].INPUT_TYPES())
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            origin = source(slot["link"])
            if origin is None:
                continue
            inputs[slot["name"]] = origin[1] if origin[0] is None else [origin[0], origin[1]]
        prompt[str(node["id"])] = {"class_type": class_type, "inputs": inputs}
    return prompt


def is_api_format(workflow: dict) -> bool:
    """An API prompt maps node ids to {"class_type", "inputs"}; a UI workflow has "nodes"."""
    return "nodes" not in workflow and all(isinstance(v, dict) and "class_type" in v for v in workflow.values())


def to_api(workflow: dict, node_class_mappings: dict) -> dict:
    """The API prompt of a workflow in either format."""
    return workflow if is_api_format(workflow) else ui_to_api(workflow, node_class_mappings)


def parse_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class OverrideError(ValueError):
    pass


def apply_overrides(prompt: dict, overrides: list[str]) -> None:
    """Apply ``NAME=VALUE`` overrides to every node of an API prompt with that widget input."""
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise OverrideError(f"--set {item!r}: write NAME=VALUE")
        hits = [node for node in prompt.values() if name in node["inputs"] and not isinstance(node["inputs"][name], list)]
        if not hits:
            raise OverrideError(f"--set {item!r}: no node of the workflow has a widget input named {name!r}")
        for node in hits:
            node["inputs"][name] = parse_value(value)
