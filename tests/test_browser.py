"""The real frontend: ComfyUI's server on loopback with the pack installed, its web UI in headless
Chromium (Debian's chromium through playwright). Every example workflow is opened from the
templates browser (with its thumbnail) and checked for missing nodes and widget errors, then
queued from the UI (shrunk for the CPU; training workflows first; not the Flux / SD3.5 ones,
see QUEUEABLE) and its images awaited.

Pictures at 100 % zoom, so that titles, widgets and links can be read: a crop of each workflow's
key nodes (the pack's own) and a 4:3 thumbnail centred on its signature node. They go to a
temporary folder, or with PROMPT_EDIT_UPDATE_PICTURES=1 to the repository: the crops to
docs/screenshots/ (the README shows them) and the thumbnails beside the workflows, where the
templates browser finds them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from PIL import Image

from harness import family_files, pack
from workflow_api import FRONTEND_ONLY_NODES, load_workflow

pytestmark = pytest.mark.comfy
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WORKFLOWS = sorted(p.stem for p in (pack.ROOT / "example_workflows").glob("*.json"))
QUEUED = "p2p_replace"
# Shrunk for the CPU; "steps" is set alike on an inversion, its sampler and a trainer, as it must be.
SMALL = {"steps": 2, "width": 64, "height": 64, "iterations": 2, "inner_steps": 1}
# Large enough for the widest set of key nodes at 100 % zoom (variations: 2200 x 720 graph units).
VIEWPORT = {"width": 2560, "height": 1440}
# The node a workflow's thumbnail is centred on: the first of these types the workflow has.
SIGNATURE_NODES = tuple(f"PromptEdit{name}" for name in (
    "TrainConditionalEmbeddingVAE", "TrainEmbeddingVAE", "LoadEmbeddingVAE", "ReconstructionMetrics",
    "P2PAttentionMaps", "P2PLocalBlend", "P2PReweight", "KeepOutsideMask", "StochasticEmbeddings", "InvertImage",
    "P2PPrompts"))
THUMBNAIL_SIZE = (640, 480)

# Every combo value and number in range, by the widgets' own options (the frontend marks those
# that are not), for every node of the graph.
WIDGET_PROBLEMS = """() => window.app.graph._nodes.flatMap(node => (node.widgets || []).flatMap(w => {
    const where = `${node.type}.${w.name}`;
    if (w.type === 'combo' && w.options && Array.isArray(w.options.values) && !w.options.values.includes(w.value))
        return [`${where}: ${JSON.stringify(w.value)} is not one of its options`];
    if (w.type === 'number' && w.options && ((w.options.min !== undefined && w.value < w.options.min) ||
                                             (w.options.max !== undefined && w.value > w.options.max)))
        return [`${where}: ${w.value} is out of range`];
    return [];
}))"""


@pytest.fixture(scope="module")
def browser_page(comfy_server):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    url, _, _ = comfy_server
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        page.console_errors = []
        page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
        page.goto(url)
        page.wait_for_function("() => window.app && window.app.graph && window.app.extensionManager", timeout=120000)
        # full detail at the zoom that fits a whole workflow, for readable screenshots: frontend 1.27
        # switches to low quality below a zoom threshold, 1.49 below a rendered font size
        page.evaluate("""() => { const setting = window.app.extensionManager.setting;
            for (const [id, value] of [['LiteGraph.Canvas.LowQualityRenderingZoomThreshold', 0.1],
                                       ['LiteGraph.Canvas.MinFontSizeForLOD', 0]])
                try { setting.set(id, value); } catch (error) { /* not a setting of this frontend */ } }""")
        yield page, url
        browser.close()


def workflow_path(name: str) -> Path:
    return pack.ROOT / "example_workflows" / f"{name}.json"


def urllib_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


# The innermost element around the card's title that holds an image, and that image loaded.
CARD_THUMBNAIL_LOADED = """(name) => [...document.querySelectorAll('[role=dialog] *')]
    .filter(element => element.children.length === 0 && element.textContent.trim() === name)
    .some(title => {
        for (let box = title.parentElement; box; box = box.parentElement) {
            const img = box.querySelector('img');
            if (img) return img.complete && img.naturalWidth > 0;
        }
        return false;
    })"""


def open_template(page, name: str) -> None:
    """Open the templates browser, pick this pack's section, search for the workflow, click its card."""
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.get_by_role("dialog")
    # The pack's section is an option in frontend 1.27 and a button in 1.49; the search box's
    # placeholder went from "Search templates..." to "Search ...".
    section = dialog.get_by_role("option", name=pack.PACK).or_(dialog.get_by_role("button", name=pack.PACK))
    section.first.click(timeout=30000)
    dialog.locator("input[placeholder^='Search']").first.fill(name)  # the grid shows only its first cards
    # The card shows the workflow's thumbnail, loaded (test_packaging checks that each one has its
    # .jpg). Frontend 1.49 links the server's file, 1.27 shows it as a blob: look in the card.
    if workflow_path(name).with_suffix(".jpg").exists():
        page.wait_for_function(CARD_THUMBNAIL_LOADED, arg=name, timeout=30000)
    dialog.get_by_text(name, exact=True).first.click(timeout=30000)
    page.wait_for_function(f"() => window.app.graph._nodes.length > 0 && "
                           f"(window.app.extensionManager.workflow.activeWorkflow?.filename || '').startsWith({json.dumps(name)})",
                           timeout=30000)
    page.wait_for_timeout(500)


def picture_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """(where the key-node crops go, where the thumbnails go)."""
    if os.environ.get("PROMPT_EDIT_UPDATE_PICTURES") == "1":
        return pack.ROOT / "docs" / "screenshots", pack.ROOT / "example_workflows"
    directory = tmp_path_factory.mktemp("pictures")
    return directory, directory


# The graph-space box of the nodes, with their title bars.
NODES_BOX = """(types) => {
    const nodes = window.app.graph._nodes.filter(n => types.includes(n.type));
    const title = window.LiteGraph.NODE_TITLE_HEIGHT;
    return [Math.min(...nodes.map(n => n.pos[0])), Math.min(...nodes.map(n => n.pos[1] - title)),
            Math.max(...nodes.map(n => n.pos[0] + n.size[0])), Math.max(...nodes.map(n => n.pos[1] + n.size[1]))];
}"""
# Zoom 1 with graph point (x, y) drawn at canvas pixel (left, top); returns the canvas's page offset.
SHOW_AT_100_PERCENT = """([x, y, left, top]) => {
    const canvas = window.app.canvas;
    canvas.ds.scale = 1;
    canvas.ds.offset = [left - x, top - y];
    canvas.setDirty(true, true);
    canvas.draw(true, true);
    const rect = canvas.canvas.getBoundingClientRect();
    return [rect.left, rect.top];
}"""
# Clear of the frontend's side bar, menu and workflow tabs, which are drawn over the canvas.
CLEAR_LEFT, CLEAR_TOP, MARGIN = 96, 140, 24


def screenshot_at_100_percent(page, box: list[float]) -> Image.Image:
    """The canvas region of a graph-space box [x0, y0, x1, y1] at zoom 1."""
    import io

    x0, y0, x1, y1 = box
    left, top = page.evaluate(SHOW_AT_100_PERCENT, [x0, y0, CLEAR_LEFT, CLEAR_TOP])
    page.wait_for_timeout(300)
    width, height = min(x1 - x0, VIEWPORT["width"] - CLEAR_LEFT), min(y1 - y0, VIEWPORT["height"] - CLEAR_TOP)
    clip = {"x": left + CLEAR_LEFT, "y": top + CLEAR_TOP, "width": width, "height": height}
    return Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")


def take_pictures(page, name: str, crops: Path, thumbnails: Path) -> None:
    types = set(page.evaluate("() => window.app.graph._nodes.map(n => n.type)"))
    key = sorted(t for t in types if t.startswith("PromptEdit"))
    x0, y0, x1, y1 = page.evaluate(NODES_BOX, key)
    crops.mkdir(parents=True, exist_ok=True)
    screenshot_at_100_percent(page, [x0 - MARGIN, y0 - MARGIN, x1 + MARGIN, y1 + MARGIN]).save(crops / f"{name}.png", optimize=True)
    signature = next(t for t in SIGNATURE_NODES if t in types)
    sx0, sy0, sx1, sy1 = page.evaluate(NODES_BOX, [signature])
    # 4:3 around the signature node (all its instances), at least the thumbnail's size
    width = max(THUMBNAIL_SIZE[0], sx1 - sx0 + 2 * MARGIN, (sy1 - sy0 + 2 * MARGIN) * 4 / 3)
    height = width * 3 / 4
    cx, cy = (sx0 + sx1) / 2, (sy0 + sy1) / 2
    picture = screenshot_at_100_percent(page, [cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2])
    picture.resize(THUMBNAIL_SIZE, Image.LANCZOS).save(thumbnails / f"{name}.jpg", quality=88)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_each_example_opens_from_the_templates_browser_without_errors(browser_page, name, tmp_path_factory):
    page, url = browser_page
    open_template(page, name)
    known = set(urllib_json(f"{url}/object_info"))
    types = page.evaluate("() => window.app.graph._nodes.map(n => n.type)")
    expected = [n["type"] for n in load_workflow(workflow_path(name))["nodes"]]
    assert sorted(types) == sorted(expected), "the frontend did not load the whole workflow"
    missing = sorted(set(types) - known - set(FRONTEND_ONLY_NODES))
    assert not missing, f"{name}: nodes the server does not know: {missing}"
    assert not page.get_by_text("missing", exact=False).filter(has_text="node").is_visible()
    problems = page.evaluate(WIDGET_PROBLEMS)
    if family_missing_from_host(name):  # e.g. Flux.2 on 0.3.64: its CLIPLoader type is unknown there
        assert all(problem.startswith("CLIPLoader.type:") for problem in problems), f"{name}: widget errors: {problems}"
        return
    assert not problems, f"{name}: widget errors: {problems}"
    take_pictures(page, name, *picture_dirs(tmp_path_factory))


def family_missing_from_host(name: str) -> bool:
    """Whether the workflow loads a newer family this ComfyUI lacks (the pack names the version)."""
    from harness.comfyui import ensure_comfyui

    ensure_comfyui()
    from comfyui_prompt_edit.families import UnsupportedModelError, family_by_id

    for node in load_workflow(workflow_path(name))["nodes"]:
        family = family_files.DIFFUSION_MODEL_FAMILIES.get((node.get("widgets_values") or [None])[0]) \
            if node["type"] == "UNETLoader" else None
        if family is not None:
            try:
                family_by_id(family)
            except UnsupportedModelError:
                return True
    return False


# Not queued from the UI: the Flux / SD3.5 workflows and the newer families', whose stock
# text-encoder loaders would build a full-size T5-XXL or LLM whatever the file; test_example_workflows
# runs them through the executor with tiny stand-ins (here they are opened, with stand-in files).
FULL_SIZE_TEXT_ENCODER_LOADERS = {"CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader"}
QUEUEABLE = [name for name in WORKFLOWS
             if not {n["type"] for n in load_workflow(workflow_path(name))["nodes"]} & FULL_SIZE_TEXT_ENCODER_LOADERS]
# Training workflows first: the workflows that load an embedding VAE then load the file one of
# them wrote (the server's models/embedding_vae/ starts with stand-ins under the same names).
QUEUE_ORDER = sorted(QUEUEABLE, key=lambda name: ("train" not in name, name))


@pytest.mark.parametrize("name", QUEUE_ORDER)
def test_each_example_queued_from_the_ui_finishes_with_its_images(browser_page, name):
    page, url = browser_page
    open_template(page, name)
    page.evaluate("""(small) => { for (const node of window.app.graph._nodes)
        for (const w of node.widgets || []) if (w.name in small) w.value = small[w.name]; }""", SMALL)
    before = set(urllib_json(f"{url}/history"))
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as response:
        page.evaluate("() => window.app.extensionManager.command.execute('Comfy.QueuePrompt')")
    assert response.value.ok, f"{name}: the server refused the queued prompt: {response.value.text()[:2000]}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        new = {k: v for k, v in urllib_json(f"{url}/history").items() if k not in before}
        if new:
            entry = next(iter(new.values()))
            assert entry["status"]["status_str"] == "success", f"{name}: {entry['status']}"
            images = [i for output in entry["outputs"].values() for i in output.get("images", [])]
            assert images, f"{name}: the run saved no image"
            break
        time.sleep(1)
    else:
        pytest.fail(f"{name}: the queued workflow did not finish within 300 s; queue {urllib_json(f'{url}/queue')}, "
                    f"console errors {page.console_errors[-5:]}")
    if name == QUEUED:
        page.wait_for_function("() => document.querySelectorAll('img[src*=\"/view?\"]').length > 0 || "
                               "Object.keys(window.app.nodeOutputs || {}).length > 0", timeout=60000)
