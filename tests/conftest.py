"""pytest wiring: finds ComfyUI (or runs without it), the `comfy` and `full_size` markers,
--no-skips and --full-size, and the fixtures (tiny models and CLIPs, the test checkpoint, the
trained tiny SD1.5, random LPIPS weights, a ComfyUI server); what they build is in tests/harness/.

With ComfyUI, it is initialised headless on the CPU and the pack is imported as
`comfyui_prompt_edit` with its nodes registered. Without it, `comfyui_prompt_edit` is a bare
package (its __init__ is not run) so the ComfyUI-free modules stay testable, and tests marked
`@pytest.mark.comfy` or using a ComfyUI fixture are skipped with the reason.
"""

from __future__ import annotations

import os

# Tiny models run thousands of small ops; OpenMP threads that spin-wait between them stall when
# the CPU is shared with other processes (a 0.9 s sampling test took 30 s). Sleeping waiters avoid
# that. It must be set before torch loads its OpenMP runtime, i.e. before the imports below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib.util  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from typing import Any  # noqa: E402

from harness import comfyui, mmdit_files, mmdit_models, model_files, pack, tiny_models, trained_model, video_files  # noqa: E402
from workflow_api import load_workflow  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

COMFYUI_ROOT, COMFYUI_MISSING = comfyui.find_comfyui()
if COMFYUI_ROOT is not None:
    comfyui.ensure_comfyui()
else:
    pack.import_pack(execute_init=False)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full-size", action="store_true",
                     help="also run the tests marked full_size (real SD1.5 / SD2.1-v / SDXL layouts, random weights; "
                          "minutes on a CPU, 7 GB of memory)")
    parser.addoption("--no-skips", action="store_true",
                     help="fail every test that would be skipped (CI: no ComfyUI, browser or server test may "
                          "silently not run against a host)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "comfy: needs a ComfyUI installation (skipped when none is found)")
    config.addinivalue_line("markers", "full_size: full-size model layouts; run only with --full-size")
    _alias_rootdir_package(config)


def _alias_rootdir_package(config: pytest.Config) -> None:
    """The repo root has an __init__.py, so pytest imports it as a package of its own, named after
    the directory, to look for setup_module. Point that name at the already-loaded pack so its
    __init__ is neither run twice (duplicate module objects) nor, without ComfyUI, run at all."""
    from _pytest.pathlib import CouldNotResolvePathError, resolve_pkg_root_and_module_name

    init_file = pack.ROOT / "__init__.py"
    if init_file.is_file():
        consider_namespace = config.getini("consider_namespace_packages")
        try:
            _, name = resolve_pkg_root_and_module_name(init_file, consider_namespace_packages=consider_namespace)
        except CouldNotResolvePathError:
            # the checkout's folder is no module name (a worktree "wt-x"): pytest then imports the
            # file as the top-level module "__init__"
            name = init_file.stem
        sys.modules.setdefault(name, sys.modules[pack.PACK])


def pytest_report_header(config: pytest.Config) -> str:
    if COMFYUI_ROOT is None:
        return COMFYUI_MISSING
    error = comfyui.pack_import_error()
    status = f"{pack.PACK} FAILED to import: {error!r}" if error else f"{pack.PACK} imported"
    return f"ComfyUI: {COMFYUI_ROOT} (CPU); {status}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.config.getoption("--no-skips"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under --no-skips: {reason}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--full-size"):
        full_size = [item for item in items if item.get_closest_marker("full_size") is not None]
        if full_size:
            config.hook.pytest_deselected(items=full_size)
            items[:] = [item for item in items if item.get_closest_marker("full_size") is None]
    if COMFYUI_ROOT is not None:
        return
    skip = pytest.mark.skip(reason=COMFYUI_MISSING)
    for item in items:
        if item.get_closest_marker("comfy") is not None:
            item.add_marker(skip)


def _require_comfyui() -> Any:
    if COMFYUI_ROOT is None:
        pytest.skip(COMFYUI_MISSING)
    return comfyui.ensure_comfyui()


@pytest.fixture(scope="session")
def comfy_nodes() -> Any:
    """ComfyUI's `nodes` module (stock and pack nodes registered)."""
    return _require_comfyui()


@pytest.fixture(scope="session")
def sd15_checkpoint() -> str:
    """Name of a random-weight SD1.5 checkpoint visible to CheckpointLoaderSimple (generated once
    into the user cache, about 470 MB)."""
    _require_comfyui()
    path = model_files.make_sd15_checkpoint(model_files.sd15_checkpoint_path())
    model_files.register_checkpoint_dir(path.parent)
    return path.name


# Models are rebuilt per test (0.05-0.1 s): no patch or weight state can leak between tests.
# Code under test must still clone() a ModelPatcher before patching it, as ComfyUI nodes do.


@pytest.fixture(scope="session")
def trained_sd15() -> tuple[Any, Any]:
    """(ModelPatcher, CLIP): the tiny SD1.5 trained into a real denoiser (trained_model.trained_tiny_sd15;
    trains about a minute on first use, then cached across sessions), with the frozen tiny SD1
    CLIP it was trained with. Shared by the session: clone() before patching, as nodes do, and
    never modify the weights. In-distribution latents: trained_model.trained_dataset()."""
    _require_comfyui()
    return trained_model.trained_tiny_sd15()


@pytest.fixture(scope="module")
def mmdit_families() -> dict[str, tuple[Any, Any]]:
    """``{"flux": (model, clip), "sd3": (model, clip)}``: the tiny Flux-dev and SD3 with their tiny
    text encoders (real tokenizers; see mmdit_models.tiny_flux_clip / tiny_sd3_clip)."""
    _require_comfyui()
    sd3 = mmdit_models.tiny_sd3_model(context_dim=mmdit_models.SD3_CONTEXT_DIM, pooled_dim=mmdit_models.SD3_TINY_POOLED_DIM)
    return {"flux": (mmdit_models.tiny_flux_model(), mmdit_models.tiny_flux_clip()),
            "sd3": (sd3, mmdit_models.tiny_sd3_clip())}


@pytest.fixture
def tiny_sd15() -> Any:
    """SD1.5-shaped EPS ModelPatcher, context 32 (see tiny_models.tiny_sd15_model)."""
    _require_comfyui()
    return tiny_models.tiny_sd15_model()


@pytest.fixture
def tiny_sd2v() -> Any:
    """SD2-shaped V_PREDICTION ModelPatcher, context 48 (see tiny_models.tiny_sd2v_model)."""
    _require_comfyui()
    return tiny_models.tiny_sd2v_model()


@pytest.fixture
def tiny_sdxl() -> Any:
    """SDXL-shaped ModelPatcher, context 96, pooled 64 (see tiny_models.tiny_sdxl_model)."""
    _require_comfyui()
    return tiny_models.tiny_sdxl_model()


@pytest.fixture
def tiny_vae() -> Any:
    """Tiny AutoencoderKL-based comfy.sd.VAE (downscale 8, 4 channels)."""
    _require_comfyui()
    return tiny_models.tiny_vae()


# CLIPs take longer to build (tokenizer files), so each test gets a clone of a session CLIP:
# clone() separates the patcher, layer and tokenizer options; the weights are shared and must not
# be modified in place.


@pytest.fixture(scope="session")
def _sd1_clip() -> Any:
    _require_comfyui()
    return tiny_models.tiny_sd1_clip()


@pytest.fixture(scope="session")
def _sd2_clip() -> Any:
    _require_comfyui()
    return tiny_models.tiny_sd2_clip()


@pytest.fixture(scope="session")
def _sdxl_clip() -> Any:
    _require_comfyui()
    return tiny_models.tiny_sdxl_clip()


@pytest.fixture
def tiny_sd15_clip(_sd1_clip: Any) -> Any:
    """comfy.sd.CLIP matching tiny_sd15: real SD1 tokenizer, 32-wide CLIP-L."""
    return _sd1_clip.clone()


@pytest.fixture
def tiny_sd2_clip(_sd2_clip: Any) -> Any:
    """comfy.sd.CLIP matching tiny_sd2v: real SD2 tokenizer (pad 0), 48-wide CLIP-H."""
    return _sd2_clip.clone()


@pytest.fixture
def tiny_sdxl_clip(_sdxl_clip: Any) -> Any:
    """comfy.sd.CLIP matching tiny_sdxl: real SDXL tokenizers, CLIP-L 32 + CLIP-G 64."""
    return _sdxl_clip.clone()


VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision vgg16().features conv indices


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """(path, tensors): random VGG-16 weights in torchvision's layout, with LPIPS heads, as a
    safetensors file (what the LPIPS loader and the Edit Metrics node read)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    tensors, channels = {}, 3
    widths = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    for index, width in zip(VGG_CONVS, widths):
        tensors[f"features.{index}.weight"] = torch.randn(width, channels, 3, 3, generator=g) * (2 / (9 * channels)) ** 0.5
        tensors[f"features.{index}.bias"] = torch.randn(width, generator=g) * 0.01
        channels = width
    for i, width in enumerate((64, 128, 256, 512, 512)):
        tensors[f"lin{i}.weight"] = torch.rand(1, width, 1, 1, generator=g)
    path = tmp_path_factory.mktemp("lpips") / "vgg16_lpips.safetensors"
    save_file(tensors, str(path))
    return path, tensors


SERVER_STARTUP_SECONDS = 180


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """ComfyUI's own main.py on 127.0.0.1 (CPU), with a base directory whose custom_nodes/ holds
    this pack and which has the files the example workflows name (see _server_files). Yields
    (url, test checkpoint name, base directory); stopped at the end of the session."""
    root, reason = comfyui.find_comfyui()
    if root is None:
        pytest.skip(reason)
    if importlib.util.find_spec("comfyui_frontend_package") is None:
        pytest.skip("the ComfyUI server needs comfyui-frontend-package (pip install -r requirements-test.txt)")
    checkpoint = model_files.make_sd15_checkpoint(model_files.sd15_checkpoint_path())
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui_prompt_edit").symlink_to(pack.ROOT, target_is_directory=True)
    _server_files(base, checkpoint)
    port = comfyui.free_port()
    log = open(base / "server.log", "w")
    process = subprocess.Popen([sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--cpu",
                                "--base-directory", str(base), "--disable-auto-launch"],
                               cwd=root, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_STARTUP_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/object_info/PromptEditStochasticEmbeddings", timeout=5) as r:
                    if json.loads(r.read()):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the ComfyUI server did not start:\n{(base / 'server.log').read_text()[-4000:]}")
            time.sleep(0.5)
        yield url, checkpoint.name, base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


TEXT_ENCODER_LOADERS = {"CLIPLoader": 1, "DualCLIPLoader": 2, "TripleCLIPLoader": 3}  # how many file names each takes first


def _link_files(directory, names, target) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).symlink_to(target.resolve())


def _server_files(base, checkpoint) -> None:
    """The test checkpoint under its own name and under every name the example workflows load
    (SD3.5's: the SD3.5 test checkpoint), the Flux test files under Flux's names, a stand-in under
    each text-encoder name (mmdit_files.make_text_encoder_stand_in), their input photo and video, their CLIP vision model (model_files.make_clip_vision_file) and their embedding
    VAEs (model_files.write_workflow_embedding_vae)."""
    from PIL import Image

    workflows = [load_workflow(p) for p in sorted((pack.ROOT / "example_workflows").glob("*.json"))]
    widgets = [(n["type"], n["widgets_values"]) for w in workflows for n in w["nodes"]]
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    sd35 = {values[0] for kind, values in widgets if kind == "CheckpointLoaderSimple" and values[0].startswith("sd3.5")}
    for name in {checkpoint.name} | {values[0] for kind, values in widgets if kind == "CheckpointLoaderSimple"} - sd35:
        (checkpoints / name).symlink_to(checkpoint.resolve())
    _link_files(checkpoints, sd35, mmdit_files.make_sd35_checkpoint())
    _link_files(base / "models" / "diffusion_models", {values[0] for kind, values in widgets if kind == "UNETLoader"},
                mmdit_files.make_flux_diffusion_model_file())
    _link_files(base / "models" / "vae", {values[0] for kind, values in widgets if kind == "VAELoader"},
                mmdit_files.make_mmdit_vae_file())
    text_encoders = {name for kind, values in widgets if kind in TEXT_ENCODER_LOADERS
                     for name in values[:TEXT_ENCODER_LOADERS[kind]]}
    _link_files(base / "models" / "text_encoders", text_encoders, mmdit_files.make_text_encoder_stand_in())
    (base / "input").mkdir()
    for name in {values[0] for kind, values in widgets if kind == "LoadImage"}:
        pixels = torch.zeros(64, 64, 3, dtype=torch.uint8)
        pixels[16:40, 20:44] = torch.tensor([200, 80, 40], dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(base / "input" / name)
    for name in {values[0] for kind, values in widgets if kind == "LoadVideo"}:
        video_files.write_test_video(base / "input" / name)
    clip_visions = base / "models" / "clip_vision"
    clip_visions.mkdir(parents=True)
    for name in {values[0] for kind, values in widgets if kind == "CLIPVisionLoader"}:
        (clip_visions / name).symlink_to(model_files.make_clip_vision_file())
    vaes = base / "models" / "embedding_vae"
    vaes.mkdir(parents=True)
    for name in {values[0] for kind, values in widgets if kind == "PromptEditLoadEmbeddingVAE"}:
        model_files.write_workflow_embedding_vae(vaes / name)
