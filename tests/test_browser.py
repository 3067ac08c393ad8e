"""The real frontend: ComfyUI's server on loopback with the pack installed, its web UI in headless
Chromium (Debian's chromium through playwright). Every example workflow is opened from the
templates browser and checked for missing nodes and widget errors, then queued from the UI
(shrunk for the CPU; training workflows first) and its images awaited. Screenshots go to
$PROMPT_EDIT_SCREENSHOTS (the README's come from there) or a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

import comfy_harness as harness

pytestmark = pytest.mark.comfy
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WORKFLOWS = sorted(p.stem for p in (harness.ROOT / "example_workflows").glob("*.json"))
FRONTEND_ONLY = harness.workflow_api.FRONTEND_ONLY_NODES
QUEUED = "p2p_replace"
# Shrunk for the CPU; "steps" is set alike on an inversion, its sampler and a trainer, as it must be.
SMALL = {"steps": 2, "width": 64, "height": 64, "iterations": 2, "inner_steps": 1}

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
        page = browser.new_page(viewport={"width": 2000, "height": 1150})
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
    return harness.ROOT / "example_workflows" / f"{name}.json"


def urllib_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def open_template(page, name: str) -> None:
    """Open the templates browser, pick this pack's section, search for the workflow, click its card."""
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.get_by_role("dialog")
    # The pack's section is an option in frontend 1.27 and a button in 1.49; the search box's
    # placeholder went from "Search templates..." to "Search ...".
    section = dialog.get_by_role("option", name=harness.PACK).or_(dialog.get_by_role("button", name=harness.PACK))
    section.first.click(timeout=30000)
    dialog.locator("input[placeholder^='Search']").first.fill(name)  # the grid shows only its first cards
    dialog.get_by_text(name, exact=True).first.click(timeout=30000)
    page.wait_for_function(f"() => window.app.graph._nodes.length > 0 && "
                           f"(window.app.extensionManager.workflow.activeWorkflow?.filename || '').startsWith({json.dumps(name)})",
                           timeout=30000)
    page.wait_for_timeout(500)


def screenshot_dir(tmp_path_factory) -> Path:
    target = os.environ.get("PROMPT_EDIT_SCREENSHOTS")
    return Path(target) if target else tmp_path_factory.mktemp("screenshots")


@pytest.mark.parametrize("name", WORKFLOWS)
def test_each_example_opens_from_the_templates_browser_without_errors(browser_page, name, tmp_path_factory):
    page, url = browser_page
    open_template(page, name)
    known = set(urllib_json(f"{url}/object_info"))
    types = page.evaluate("() => window.app.graph._nodes.map(n => n.type)")
    expected = [n["type"] for n in harness.load_workflow(workflow_path(name))["nodes"]]
    assert sorted(types) == sorted(expected), "the frontend did not load the whole workflow"
    missing = sorted(set(types) - known - set(FRONTEND_ONLY))
    assert not missing, f"{name}: nodes the server does not know: {missing}"
    assert not page.get_by_text("missing", exact=False).filter(has_text="node").is_visible()
    problems = page.evaluate(WIDGET_PROBLEMS)
    assert not problems, f"{name}: widget errors: {problems}"
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    page.wait_for_timeout(500)
    directory = screenshot_dir(tmp_path_factory)
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / f"{name}.png"))


# Training workflows first: the workflows that load an embedding VAE then load the file one of
# them wrote (the server's models/embedding_vae/ starts with stand-ins under the same names).
QUEUE_ORDER = sorted(WORKFLOWS, key=lambda name: ("train" not in name, name))


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
