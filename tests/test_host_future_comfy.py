"""The pack on what ComfyUI does after 0.33: attention tensor containers and MultiGPU CFG Split.

Newer hosts (0.35+) call attention with q, k, v wrapped in single-owner containers and an extra
``preferred_attention=`` keyword; their ``wrap_attn`` hands the containers, still wrapped, to an
``optimized_attention_override`` that has a ``container_function`` (what
``ModelPatcher.set_model_optimized_attention`` copies from a kernel that has one) and takes them
(``.take()``) for any other override. :func:`newer_host_attention` is that dispatcher, transcribed;
the tests put it at the attention call sites of the installed host (Flux's ``attention()``, SD3's
joint blocks, the UNet's CrossAttention, and the ``optimized_attention`` the pack imports), so the
same sampling runs once as the host does it and once as a newer host would.

MultiGPU CFG Split (0.33.0) deep-clones the model per device and runs whole cond entries (every
item of the latent batch: the P2P source and its edits together) on different devices in threads;
the pack's patches live in the guider's options and are shared by the threads. On this CPU machine
a second device is reported by ComfyUI's device list (``cpu:0`` beside ``cpu``), so the real node
makes a real clone and the real scheduler splits cond and uncond across two threads.
"""

from __future__ import annotations

import functools
import threading

import pytest
import torch

from harness import comfyui, mmdit_models, tiny_models

pytestmark = pytest.mark.comfy

STEPS, CFG, SEED, SIZE = 4, 5.0, 7, 16
SOURCE, EDIT = "a cat sitting on a mat", "a dog sitting on a mat"


def stock(name):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]


def pack(name: str):
    return stock(f"PromptEdit{name}")()


def assert_same(actual, expected, tol=1e-5):
    scale = expected.abs().max().clamp_min(1.0)
    torch.testing.assert_close(actual / scale, expected / scale, atol=tol, rtol=0)


def sample(model, positive, negative, latent, cfg=CFG, scheduler="normal"):
    """The stock KSampler node's latent."""
    with torch.inference_mode():
        return comfyui.run_node(stock("KSampler"), model, SEED, STEPS, cfg, "euler", scheduler, positive, negative,
                                latent, 1.0)["samples"]


# -- the newer host's attention calling convention ----------------------------------------------


def container_class():
    """The host's AttentionTensorContainer (0.33.0 has it), or its transcription (0.3.64)."""
    import comfy.ldm.modules.attention as attention

    if hasattr(attention, "AttentionTensorContainer"):
        return attention.AttentionTensorContainer

    class AttentionTensorContainer:
        __slots__ = ("tensor",)

        def __init__(self, tensor):
            self.tensor = tensor

        def peek(self):
            if self.tensor is None:
                raise RuntimeError("attention tensor container has already been consumed")
            return self.tensor

        def take(self):
            tensor = self.peek()
            self.tensor = None
            return tensor

    return AttentionTensorContainer


class PreferredAttention:
    """What a newer host's block passes as ``preferred_attention=``: an attention function the
    dispatcher runs where no override is installed."""

    def __init__(self, function):
        self.function = function


def newer_host_attention(func, container):
    """``wrap_attn`` of ComfyUI 0.35+ around the raw attention ``func``. ``preferred_attention`` is
    left in the keywords that reach an override (as 0.33.0's wrap_attn does with any keyword), the
    stricter case: every override must accept it and pass it on."""

    def wrapper(*args, **kwargs):
        containers = args[:3] if len(args) >= 3 and isinstance(args[0], container) else None
        if "_inside_attn_wrapper" not in kwargs:
            kwargs["_inside_attn_wrapper"] = True
            override = (kwargs.get("transformer_options") or {}).get("optimized_attention_override")
            if override is not None:
                if containers is not None:
                    if hasattr(override, "container_function"):
                        return override.container_function(*args, **kwargs)
                    args = tuple(c.take() for c in containers) + args[3:]
                return override(func, *args, **kwargs)
            preferred = kwargs.get("preferred_attention")
            if preferred is not None and preferred.function is not None:
                if containers is not None:
                    args = tuple(c.take() for c in containers) + args[3:]
                return preferred.function(*args, **kwargs)
        if containers is not None:
            args = tuple(c.take() for c in containers) + args[3:]
        return func(*args, **kwargs)

    wrapper.container_function = None
    return wrapper


@pytest.fixture
def newer_host(monkeypatch):
    """Makes the host's attention call sites call as 0.35+ does (containers, ``preferred_attention=``);
    returns the raw attention function the dispatcher ends in."""
    import comfy.ldm.flux.math as flux_math
    import comfy.ldm.modules.attention as attention
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    import comfyui_prompt_edit.families.unet.install as pack_unet

    raw = attention.optimized_attention.__wrapped__
    container = container_class()
    dispatcher = newer_host_attention(raw, container)
    preferred = PreferredAttention(raw)

    def call_site(q, k, v, *args, **kwargs):
        return dispatcher(container(q), container(k), container(v), *args, preferred_attention=preferred, **kwargs)

    for module in (flux_math, mmdit, attention):
        monkeypatch.setattr(module, "optimized_attention", call_site)
    monkeypatch.setattr(attention, "optimized_attention_masked", call_site)
    monkeypatch.setattr(pack_unet, "optimized_attention", dispatcher)  # the pack imports the dispatcher itself
    return raw


class ContainerKernel:
    """Another node's attention kernel that takes tensor containers (as Comfy Kitchen's int8 one
    does), installed as the model's optimized attention; counts its calls by kind and keeps the
    keywords it was called with."""

    def __init__(self, raw):
        self.raw = raw
        self.plain_calls = self.container_calls = 0
        self.keywords: set[str] = set()

    def __deepcopy__(self, memo):
        return self

    def __call__(self, q, k, v, *args, **kwargs):
        self.plain_calls += 1
        self.keywords.update(kwargs)
        return self.raw(q, k, v, *args, **kwargs)

    def _containers(self, q, k, v, *args, **kwargs):
        self.container_calls += 1
        self.keywords.update(kwargs)
        return self.raw(q.take(), k.take(), v.take(), *args, **kwargs)


def with_container_kernel(model, raw):
    """A clone of ``model`` with :class:`ContainerKernel` as its attention, installed the host's way."""
    kernel = ContainerKernel(raw)
    kernel.container_function = kernel._containers
    model = model.clone()
    if hasattr(model, "set_model_optimized_attention"):
        model.set_model_optimized_attention(kernel)
    else:  # 0.3.64 has no such method: what 0.33.0's builds
        def optimized_attention_override(_, *args, **kwargs):
            return kernel(*args, **kwargs)

        optimized_attention_override.container_function = kernel.container_function
        options = model.model_options.setdefault("transformer_options", {})
        options["optimized_attention_override"] = optimized_attention_override
    return model, kernel


def unet_edit(model, clip):
    """(patched model, controller, positive, negative, latent): replace with self-attention injection
    and a local blend, on a clone of ``model``."""
    positive, latent, edit = pack("P2PPrompts").build(clip, {"samples": torch.zeros(1, 4, SIZE, SIZE)}, SOURCE, EDIT)
    (blended,) = pack("P2PLocalBlend").blend(edit, clip, "cat", "dog", 0.3, 0.0)
    patched, controller = pack("P2PAttentionControl").apply(model, blended, "replace", 0.0, 0.8, 0.5, "coarse")
    return patched, controller, positive, comfyui.encode(clip, ""), latent


def test_unet_edit_under_newer_hosts_containers(tiny_sd15, tiny_sd15_clip, request):
    import comfy.ldm.modules.attention as attention

    raw = attention.optimized_attention.__wrapped__
    runs = {}
    for host in ("installed", "newer"):
        if host == "newer":
            raw = request.getfixturevalue("newer_host")
        model, kernel = with_container_kernel(tiny_sd15, raw)
        patched, controller, positive, negative, latent = unet_edit(model, tiny_sd15_clip)
        out = sample(patched, positive, negative, latent)
        runs[host] = out, controller.store.running.clone(), kernel
    (out, maps, kernel), (newer_out, newer_maps, newer_kernel) = runs["installed"], runs["newer"]
    assert (out[1] - out[0]).abs().max() > 1e-3 * out.abs().max(), "the edit must change the edited item"
    assert_same(newer_out, out)
    assert_same(newer_maps, maps)
    # layers the pack leaves alone hand the kernel containers; the pack's replace patches call it with tensors
    assert newer_kernel.container_calls > 0 and newer_kernel.plain_calls > 0
    assert "preferred_attention" in newer_kernel.keywords
    assert kernel.container_calls == 0 and kernel.plain_calls > 0


def mmdit_edit(model, clip, mechanism="qk"):
    latent = {"samples": torch.zeros(1, mmdit_models.MMDIT_LATENT_CHANNELS, SIZE, SIZE)}
    positive, batch, edit = pack("P2PPrompts").build(clip, latent, "a photo of a cat riding a bicycle",
                                                     "a photo of a dog riding a bicycle")
    (blended,) = pack("P2PLocalBlend").blend(edit, clip, "cat", "dog", 0.3, 0.0)
    patched, handle = pack("P2PAttentionControl").apply(model, blended, "replace", 0.0, 0.8, 0.4, "coarse", qk_end=0.5,
                                                           mmdit_mechanism=mechanism)
    return patched, handle, positive, batch


@pytest.mark.parametrize("mechanism", ["qk", "probabilities"])
@pytest.mark.parametrize("which", ["flux", "sd3"])
def test_mmdit_edit_and_maps_under_newer_hosts_containers(which, mechanism, mmdit_families, request):
    import comfy.ldm.modules.attention as attention

    model, clip = mmdit_families[which]
    negative = comfyui.encode(clip, "")
    raw = attention.optimized_attention.__wrapped__
    runs = {}
    for host in ("installed", "newer"):
        if host == "newer":
            raw = request.getfixturevalue("newer_host")
        kernelled, kernel = with_container_kernel(model, raw)
        patched, handle, positive, batch = mmdit_edit(kernelled, clip, mechanism)
        out = sample(patched, positive, negative, batch, cfg=2.0, scheduler="simple")
        runs[host] = out, handle.store.running.clone(), kernel
    (out, maps, kernel), (newer_out, newer_maps, newer_kernel) = runs["installed"], runs["newer"]
    assert (out[1] - out[0]).abs().max() > 1e-3 * out.abs().max(), "the edit must change the edited item"
    assert_same(newer_out, out, tol=1e-6)
    assert_same(newer_maps, maps, tol=1e-6)
    # every attention call went on to the kernel in containers, through the pack's overrides
    assert newer_kernel.container_calls > 0 and newer_kernel.plain_calls == 0
    assert "preferred_attention" in newer_kernel.keywords
    assert kernel.container_calls == 0 and kernel.plain_calls > 0


# -- MultiGPU CFG Split ---------------------------------------------------------------------------


def has_multigpu() -> bool:
    import nodes

    return "MultiGPU_WorkUnits" in nodes.NODE_CLASS_MAPPINGS


@pytest.fixture
def two_devices(comfy_nodes, monkeypatch) -> bool:
    """Whether the host has MultiGPU CFG Split (0.33.0). Where it has, ComfyUI's device list reports
    a second device (``cpu:0``, the same CPU) beside the model's; where not (0.3.64), the host has
    none of it, and the pack's patches meet no clones and no threads (every other test)."""
    import comfy.model_management as mm
    import comfy.model_patcher

    if not has_multigpu():
        assert not hasattr(comfy.model_patcher.ModelPatcher, "deepclone_multigpu")
        return False
    monkeypatch.setattr(mm, "get_all_torch_devices",
                        lambda exclude_current=False: [torch.device("cpu"), torch.device("cpu", 0)])
    return True


class ThreadProbe:
    """Another node's ``APPLY_MODEL`` wrapper: records which thread and device ran which chunks."""

    def __init__(self):
        self.seen = set()
        self.lock = threading.Lock()

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kw):
        with self.lock:
            self.seen.add((threading.get_ident(), str(transformer_options.get("multigpu_thread_device")),
                           tuple(transformer_options["cond_or_uncond"])))
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kw)


def reloadable(model, factory, seed=0):
    """A clone of ``model`` (built by ``factory(seed)``) that MultiGPU CFG Split can load again for
    another device (what the stock loaders register as ``cached_patcher_init``), with a
    :class:`ThreadProbe`."""
    import comfy.patcher_extension

    model = model.clone()
    model.cached_patcher_init = (factory, (seed,))
    probe = ThreadProbe()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "thread_probe", probe)
    return model, probe


def split(model):
    """The model through the real MultiGPU CFG Split node."""
    import comfy.model_management as mm

    # The node looks through the loaded models for a clone to reuse, and 0.33.0 fails on an entry
    # whose ModelPatcher was let go while its weights stay loaded (the one-device runs' clones):
    # unload them first, as the server does between prompts when memory is short.
    mm.unload_all_models()
    mm.current_loaded_models[:] = [entry for entry in mm.current_loaded_models if entry.model is not None]
    out = comfyui.run_node(stock("MultiGPU_WorkUnits"), model, 2)
    assert len(out.get_additional_models_with_key("multigpu")) == 1, "the node made no clone for the second device"
    return out


def assert_split_across_threads(probe):
    devices = {(device, chunks) for _, device, chunks in probe.seen}
    assert devices == {("cpu", (0,)), ("cpu:0", (1,))}, f"cond and uncond did not run on the two devices: {devices}"
    assert len({thread for thread, _, _ in probe.seen}) == 2


@pytest.mark.parametrize("order", ["p2p, then split", "split, then p2p"])
def test_unet_edit_under_multigpu_cfg_split(order, tiny_sd15, tiny_sd15_clip, two_devices):
    if not two_devices:
        return
    model, probe = reloadable(tiny_sd15, tiny_models.tiny_sd15_model)
    patched, controller, positive, negative, latent = unet_edit(model, tiny_sd15_clip)
    one_device = sample(patched, positive, negative, latent)
    maps = controller.store.running.clone()
    probe.seen.clear()
    if order == "p2p, then split":
        split_model = split(patched)
    else:
        split_model, controller, *_ = unet_edit(split(model), tiny_sd15_clip)
    out = sample(split_model, positive, negative, latent)
    assert_split_across_threads(probe)
    assert (out[1] - out[0]).abs().max() > 1e-3 * out.abs().max(), "the edit must change the edited item"
    assert_same(out, one_device)
    assert_same(controller.store.running, maps)


def test_mmdit_edit_under_multigpu_cfg_split(mmdit_families, two_devices):
    if not two_devices:
        return
    model, clip = mmdit_families["sd3"]  # what the fixture built, with the factory that builds it
    factory = functools.partial(mmdit_models.tiny_sd3_model, context_dim=mmdit_models.SD3_CONTEXT_DIM,
                                pooled_dim=mmdit_models.SD3_TINY_POOLED_DIM)
    model, probe = reloadable(model, factory)
    negative = comfyui.encode(clip, "")
    patched, handle, positive, batch = mmdit_edit(model, clip)
    one_device = sample(patched, positive, negative, batch, cfg=2.0, scheduler="simple")
    maps = handle.store.running.clone()
    probe.seen.clear()
    out = sample(split(patched), positive, negative, batch, cfg=2.0, scheduler="simple")
    assert_split_across_threads(probe)
    assert (out[1] - out[0]).abs().max() > 1e-3 * out.abs().max()
    assert_same(out, one_device)
    assert_same(handle.store.running, maps)


@pytest.mark.parametrize("method", ["negative-prompt", "direct"])
def test_inversion_under_multigpu_cfg_split(method, tiny_sd15, tiny_sd15_clip, two_devices):
    if not two_devices:
        return
    from harness import inversion_runs

    model, probe = reloadable(tiny_sd15, tiny_models.tiny_sd15_model)
    g = torch.Generator().manual_seed(3)
    latent = torch.randn(1, 4, SIZE, SIZE, generator=g)
    positive, negative, noisy, inversion = inversion_runs.invert(model, tiny_sd15_clip, latent, method, steps=STEPS)
    applied = pack("ApplyInversion").apply(model, inversion)[0]

    def reconstruct(m):
        with torch.inference_mode():
            return stock("KSamplerAdvanced")().sample(m, "disable", 0, STEPS, inversion.guidance, "euler",
                                                      "ddim_uniform", positive, negative, noisy, 0, 10000,
                                                      "disable")[0]["samples"]

    one_device = reconstruct(applied)
    probe.seen.clear()
    out = reconstruct(split(applied))
    assert_split_across_threads(probe)
    assert_same(out, one_device)
