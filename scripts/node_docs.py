"""Write the node help pages (web/docs/<NodeName>.md) from the nodes' descriptions and tooltips.

    python scripts/node_docs.py [--comfyui PATH]

Run it after changing a node's inputs, description or tooltips; tests/test_pack.py fails while a
page is out of date.
"""

from __future__ import annotations

import argparse
import sys

from comfy_cli import find_comfyui, start_comfyui


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", help="the ComfyUI install to use")
    args = parser.parse_args(argv)
    start_comfyui(find_comfyui(args.comfyui), cpu=True, extra_nodes=False)
    package = sys.modules["comfyui_prompt_edit"]
    from comfyui_prompt_edit.nodes.help_pages import DOCS_DIR, pages

    DOCS_DIR.mkdir(parents=True, exist_ok=True)
    written = pages(package.NODE_CLASS_MAPPINGS, package.NODE_DISPLAY_NAME_MAPPINGS)
    for stale in set(p.name for p in DOCS_DIR.glob("*.md")) - set(written):
        (DOCS_DIR / stale).unlink()
    for name, text in written.items():
        (DOCS_DIR / name).write_text(text)
    print(f"wrote {len(written)} help pages to {DOCS_DIR}")


if __name__ == "__main__":
    main()
