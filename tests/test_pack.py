"""The pack as ComfyUI's loader sees it: registration, metadata every node must have."""

from __future__ import annotations

import asyncio

import pytest

import comfy_harness as harness

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
        assert asyncio.run(comfy_nodes.load_custom_node(str(harness.ROOT)))
        assert expected <= set(comfy_nodes.NODE_CLASS_MAPPINGS)
        assert expected <= set(comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS)
    finally:
        comfy_nodes.NODE_CLASS_MAPPINGS.clear()
        comfy_nodes.NODE_CLASS_MAPPINGS.update(saved[0])
        comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS.clear()
        comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS.update(saved[1])


@pytest.mark.parametrize("name", sorted(["PromptEditP2PPrompts", "PromptEditP2PReweight", "PromptEditP2PLocalBlend",
                                          "PromptEditP2PAttentionControl", "PromptEditP2PAttentionMaps"]))
def test_node_metadata(comfy_nodes, name):
    cls = pack_classes()[name]
    assert cls.CATEGORY.split("/")[0] == ROOT_CATEGORY
    assert cls.DESCRIPTION.strip()
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    inputs = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for input_name, spec in inputs.get(section, {}).items():
            assert spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
    assert name in comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS
