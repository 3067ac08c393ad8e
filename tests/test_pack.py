"""The pack as ComfyUI's loader sees it: registration, metadata every node must have."""

from __future__ import annotations

import asyncio

import pytest

from harness import pack

pytestmark = pytest.mark.comfy

ROOT_CATEGORY = "prompt_edit"


def pack_classes():
    import nodes

    return {name: cls for name, cls in nodes.NODE_CLASS_MAPPINGS.items() if name.startswith("PromptEdit")}


def test_the_real_loader_registers_every_node(comfy_nodes):
    saved = dict(comfy_nodes.NODE_CLASS_MAPPINGS), dict(comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS)
    expected = set(pack_classes())
    try:
        for name in expected:
            del comfy_nodes.NODE_CLASS_MAPPINGS[name]
        assert asyncio.run(comfy_nodes.load_custom_node(str(pack.ROOT)))
        assert expected <= set(comfy_nodes.NODE_CLASS_MAPPINGS)
        assert expected <= set(comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS)
    finally:
        comfy_nodes.NODE_CLASS_MAPPINGS.clear()
        comfy_nodes.NODE_CLASS_MAPPINGS.update(saved[0])
        comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS.clear()
        comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS.update(saved[1])


def test_node_metadata(comfy_nodes):
    classes = pack_classes()
    assert len(classes) >= 10
    for name, cls in classes.items():
        assert cls.CATEGORY.split("/")[0] == ROOT_CATEGORY, name
        assert cls.DESCRIPTION.strip(), name
        assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES), name
        inputs = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for input_name, spec in inputs.get(section, {}).items():
                assert spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
        assert name in comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS, name


def test_this_host_has_every_feature_the_pack_needs(comfy_nodes):
    from comfyui_prompt_edit.nodes import host

    assert host.missing_features() == []


def test_a_host_without_a_needed_feature_is_refused_with_what_to_do(comfy_nodes, monkeypatch):
    import comfy.model_patcher
    from comfyui_prompt_edit.nodes import host

    monkeypatch.delattr(comfy.model_patcher.ModelPatcher, "add_wrapper_with_key")
    with pytest.raises(ImportError, match=r"needs ComfyUI 0\.3\.64 or newer .*lacks comfy\.model_patcher\."
                                          r"ModelPatcher\.add_wrapper_with_key\. Update ComfyUI"):
        host.require_supported_comfyui()


def test_every_node_has_a_current_help_page(comfy_nodes):
    """web/docs/<NodeName>.md are written from the nodes' tooltips (python scripts/node_docs.py)."""
    from comfyui_prompt_edit.nodes.help_pages import DOCS_DIR, pages

    expected = pages(pack_classes(), comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS)
    on_disk = {p.name: p.read_text() for p in DOCS_DIR.glob("*.md")}
    stale = sorted(name for name in expected.keys() | on_disk.keys() if expected.get(name) != on_disk.get(name))
    assert not stale, f"help pages out of date: {stale}; run python scripts/node_docs.py"
