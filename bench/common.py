"""What the benchmarks share: the process set-up (thread waiting, sys.path), starting ComfyUI
headless on the chosen device with the pack registered, the SD1.5-shaped models (the tests' tiny
one, or the full layout with random weights), and the sampling settings of the P2P and variations
benchmarks. Import it before torch: it sets environment variables that torch reads as it loads.
"""

from __future__ import annotations

import gc
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Tiny models run thousands of small ops; spin-waiting OpenMP threads stall on a shared CPU
# (see tests/conftest.py). Both must be set before torch loads its OpenMP and profiler runtimes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # p2p_overhead's CPU memory meter: the profiler logs start/stop lines

# The benchmarks run as `python bench/NAME.py` and build their models with the tests' harness
# (tests/harness/), which imports the command-line tools' shared modules (scripts/comfy_cli.py)
# by module name: both folders go on sys.path, here, once for every benchmark.
REPO = Path(__file__).resolve().parents[1]
for folder in ("scripts", "tests"):
    if str(REPO / folder) not in sys.path:
        sys.path.insert(0, str(REPO / folder))

import torch  # noqa: E402

from harness import comfyui, tiny_models  # noqa: E402

SEED = 0
CFG = 7.5
SAMPLER, SCHEDULER = "euler", "normal"


def init_comfyui(device: str) -> Any:
    """Initialise ComfyUI headless on ``device``; return its ``nodes`` module with the pack registered.

    The harness's ensure_comfyui() sets ``args.cpu``, which ``comfy.model_management`` reads once,
    at its import: importing that module first keeps the accelerator for a CUDA run. Exits with
    the reason when there is no ComfyUI, the pack fails to import or the device is not ``device``.
    """
    script = Path(sys.argv[0]).name
    root, reason = comfyui.find_comfyui()
    if root is None:
        raise SystemExit(f"{script}: {reason}")
    if device != "cpu":
        sys.path.insert(0, str(root))
        import comfy.model_management  # noqa: F401
    logging.disable(logging.WARNING)  # ComfyUI's import-time chatter (optional deps, CPU-mode notice)
    try:
        nodes = comfyui.ensure_comfyui()
    finally:
        logging.disable(logging.NOTSET)
    if comfyui.pack_import_error() is not None:
        raise SystemExit(f"{script}: the pack failed to import: {comfyui.pack_import_error()!r}")
    import comfy.model_management as mm

    if mm.get_torch_device().type != device:
        raise SystemExit(f"{script}: ComfyUI runs on {mm.get_torch_device()}, not {device}")
    return nodes


def sd15(full: bool, device: str, seed: int) -> tuple[Any, Any, str]:
    """(model, CLIP, description) of an SD1.5-shaped model with random weights: the tests' tiny one
    (tiny_models.tiny_sd15_model(seed), tiny_sd1_clip(seed + 1)), fp32; or with ``full`` the real
    layout (860 M parameters, tests/harness/tiny_models.FULL_SIZE), fp16 on CUDA, fp32 on the CPU."""
    if not full:
        return (tiny_models.tiny_sd15_model(seed), tiny_models.tiny_sd1_clip(seed + 1),
                "tiny SD1.5-shaped UNet (32/64 ch), fp32")
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = tiny_models.full_size_model("sd15", dtype, seed, compute_dtype=None)
    return model, tiny_models.full_width_clip("sd15", seed + 1), f"SD1.5 UNet (320 ch, 4 levels), {dtype}"


def synchronize(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a timer reads the work done."""
    if device == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------
# Measuring: time per run and peak tensor memory


class CudaPeak:
    """Peak CUDA memory allocated by torch inside the block, above what was allocated before it."""

    def __enter__(self) -> CudaPeak:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self._base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc: object) -> None:
        torch.cuda.synchronize()
        self.mib = (torch.cuda.max_memory_allocated() - self._base) / 2**20


class TensorPeak:
    """Peak bytes of torch CPU tensors inside the block above those live at its start.

    A running sum over the profiler's allocation and free events, which torch's CPU allocator
    reports for every tensor: exact for tensors, like CUDA's ``max_memory_allocated``; Python
    objects and malloc's own overhead are not counted. Frees of tensors allocated before the
    block are not reported (torch warns once), so memory that a run releases from the run
    before it (e.g. the P2P map store, reset at sampling start) is not subtracted.
    """

    def __enter__(self) -> TensorPeak:
        gc.collect()
        self._profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
        self._profiler.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._profiler.__exit__(*exc)
        events = sorted(
            (e.start_ns(), e.nbytes())
            for e in self._profiler.profiler.kineto_results.events()
            if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
        )
        total = peak = 0
        for _, nbytes in events:
            total += nbytes
            peak = max(peak, total)
        self.mib = peak / 2**20


def check_meter(meter: TensorPeak | CudaPeak, device: str) -> str:
    """Measure a 32 MiB tensor with ``meter``; return a one-line verdict."""
    with meter:
        probe = torch.ones(8 * 2**20, device=device)  # 8 Mi fp32 = 32 MiB
        del probe
    ok = abs(meter.mib - 32) <= 3.2
    return f"{'ok' if ok else 'WRONG'}, a 32 MiB tensor measured {meter.mib:.1f} MiB"


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (fp32)."""
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@dataclass
class Result:
    times: list[float]
    mib: float = float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def measure_interleaved(sample: Callable[[Any, dict[str, Any]], torch.Tensor], models: dict[str, Any],
                        work: dict[str, Any], repeats: int) -> tuple[dict[str, Result], dict[str, torch.Tensor]]:
    """Time and CPU tensor memory of ``sample(model, work)`` for each named model: a warm-up, then
    ``repeats`` rounds that run the variants in turn (so a slow moment of a shared machine falls on
    all of them), then one memory run per variant, whose output is kept for the accuracy check."""
    for model in models.values():
        sample(model, work)
    results = {name: Result([]) for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            sample(model, work)
            results[name].times.append(time.perf_counter() - start)
    meter, outputs = TensorPeak(), {}
    for name, model in models.items():
        with meter:
            outputs[name] = sample(model, work)
        results[name].mib = meter.mib
    return results, outputs
