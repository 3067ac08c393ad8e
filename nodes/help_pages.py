"""The node library's help page of every node (``WEB_DIRECTORY/docs/<NodeName>.md``, which the
frontend shows in its node help panel), written from the nodes' own descriptions and tooltips so
that the two cannot drift: ``scripts/node_docs.py`` writes them, a test checks they are current."""

from __future__ import annotations

from pathlib import Path

DOCS_DIR = Path(__file__).resolve().parents[1] / "web" / "docs"


def _type_name(spec: tuple) -> str:
    # A combo's values are not listed: some come from the host (schedulers) or the user's folders.
    return "choice" if isinstance(spec[0], (list, tuple)) else f"`{spec[0]}`"


def _input_lines(inputs: dict, optional: bool) -> list[str]:
    lines = []
    for name, spec in inputs.items():
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        details = [_type_name(spec)]
        if "default" in options:
            details.append(f"default `{options['default']!r}`")
        if optional:
            details.append("optional")
        tooltip = options.get("tooltip", "")
        lines.append(f"- **{name}** ({'; '.join(details)}){': ' + tooltip if tooltip else ''}")
    return lines


def render(node_class: type, display_name: str) -> str:
    """The help page of a (V1) node class, in Markdown."""
    types = node_class.INPUT_TYPES()
    lines = [f"# {display_name}", "", node_class.DESCRIPTION.strip(), "", "## Inputs", ""]
    lines += _input_lines(types.get("required", {}), optional=False)
    lines += _input_lines(types.get("optional", {}), optional=True)
    outputs = list(zip(getattr(node_class, "RETURN_NAMES", node_class.RETURN_TYPES), node_class.RETURN_TYPES,
                       getattr(node_class, "OUTPUT_TOOLTIPS", ("",) * len(node_class.RETURN_TYPES))))
    if outputs:
        lines += ["", "## Outputs", ""]
        lines += [f"- **{name}** (`{kind}`){': ' + tip if tip else ''}" for name, kind, tip in outputs]
    return "\n".join(lines) + "\n"


def pages(class_mappings: dict, display_names: dict) -> dict[str, str]:
    """``{file name: Markdown}`` for every node of the pack."""
    return {f"{name}.md": render(cls, display_names.get(name, name)) for name, cls in class_mappings.items()}
