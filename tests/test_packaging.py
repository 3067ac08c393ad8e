"""The pack as a package: its declared dependencies are what it imports, its license is shipped."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

from harness import pack

# import name -> distribution name, for the ones that differ
DISTRIBUTIONS = {"PIL": "pillow"}


def imported_top_level_modules() -> set[str]:
    found = set()
    for entry in pack.RUNTIME_PACKAGES:
        path = pack.ROOT / entry
        for source in ([path] if path.is_file() else sorted(path.rglob("*.py"))):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found


def declared(path: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {line for line in lines if line}


def test_declared_dependencies_are_exactly_the_third_party_imports():
    third_party = imported_top_level_modules() - set(sys.stdlib_module_names) - pack.HOST_MODULES
    expected = {DISTRIBUTIONS.get(name, name) for name in third_party}
    project = tomllib.loads((pack.ROOT / "pyproject.toml").read_text())["project"]
    assert declared(pack.ROOT / "requirements.txt") == expected
    assert set(project["dependencies"]) == expected


def test_the_declared_license_file_is_the_gpl_3():
    project = tomllib.loads((pack.ROOT / "pyproject.toml").read_text())["project"]
    license_file = pack.ROOT / project["license"]["file"]
    text = license_file.read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text


# The model loaders of the examples: how many file names their widgets start with, and the model
# folder the frontend's download puts those files in.
MODEL_LOADERS = {"CheckpointLoaderSimple": (1, "checkpoints"), "UNETLoader": (1, "diffusion_models"),
                 "VAELoader": (1, "vae"), "CLIPLoader": (1, "text_encoders"), "DualCLIPLoader": (2, "text_encoders"),
                 "TripleCLIPLoader": (3, "text_encoders")}


def test_every_example_model_loader_offers_its_model_downloads():
    import json

    for path in sorted((pack.ROOT / "example_workflows").glob("*.json")):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] not in MODEL_LOADERS:
                continue
            count, directory = MODEL_LOADERS[node["type"]]
            models = node.get("properties", {}).get("models", [])
            where = f"{path.name}: {node['type']}"
            assert [m["name"] for m in models] == node["widgets_values"][:count], f"{where}: no download for its files"
            assert all(m["url"].startswith("https://huggingface.co/") and m["url"].endswith("/" + m["name"])
                       and m["directory"] == directory for m in models), where


def test_pyproject_has_what_the_comfy_registry_requires():
    """The fields `comfy node publish` checks (docs.comfy.org/registry/specifications)."""
    import re

    from PIL import Image

    config = tomllib.loads((pack.ROOT / "pyproject.toml").read_text())
    project, comfy = config["project"], config["tool"]["comfy"]
    # node id: < 100 characters, letters, digits and single - _ . between them, starting with a letter
    assert len(project["name"]) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", project["name"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), "the Registry takes X.Y.Z versions"
    assert (pack.ROOT / project["license"]["file"]).is_file()
    assert project["description"]
    repository = project["urls"]["Repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository)
    assert project["urls"]["Documentation"].startswith(repository)
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"]) and comfy["DisplayName"]
    # The icon is served from the repository itself: its file must be there, square, at most 400 px.
    owner_name = repository.removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{owner_name}/main/"
    assert comfy["Icon"].startswith(prefix), "the Icon should be a file of this repository"
    with Image.open(pack.ROOT / comfy["Icon"].removeprefix(prefix)) as icon:
        assert icon.width == icon.height <= 400, icon.size
    # the oldest host the pack is tested on (read from the source: nodes/ imports ComfyUI)
    oldest = re.search(r'^OLDEST_TESTED = "([\d.]+)"$', (pack.ROOT / "nodes" / "host.py").read_text(), re.M)
    assert comfy["requires-comfyui"] == f">={oldest.group(1)}"


def test_every_example_workflow_has_its_thumbnail_for_the_templates_browser():
    """The frontend shows example_workflows/<name>.jpg on the workflow's card (test_browser
    checks that it loads); the pictures come from test_browser with PROMPT_EDIT_UPDATE_PICTURES=1."""
    from PIL import Image

    for path in sorted((pack.ROOT / "example_workflows").glob("*.json")):
        thumbnail = path.with_suffix(".jpg")
        assert thumbnail.is_file(), f"{path.name} has no thumbnail {thumbnail.name}"
        with Image.open(thumbnail) as picture:
            assert picture.format == "JPEG" and picture.size == (640, 480), (thumbnail.name, picture.size)
    pictures = {p.stem for p in (pack.ROOT / "example_workflows").glob("*.jpg")}
    assert pictures == {p.stem for p in (pack.ROOT / "example_workflows").glob("*.json")}, "a thumbnail without its workflow"
