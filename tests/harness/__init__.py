"""Headless ComfyUI for the pack's tests, benchmarks and scripts/report.py, one module per job:

- ``pack``: where the pack's source is, importing it as ``comfyui_prompt_edit`` without ComfyUI,
  its runtime layout, and the per-user cache for generated files;
- ``comfyui``: finding and initialising ComfyUI on the CPU with the pack's nodes registered,
  calling a node, encoding a prompt;
- ``tiny_models``: tiny random-weight SD1.5, SD2-v and SDXL models (UNets, CLIPs, a VAE, a
  ControlNet, CLIP vision) built through ComfyUI's own classes, and the full-size layouts;
- ``mmdit_models``: tiny random-weight MMDiT models (Flux, SD3) and their text conditioning;
- ``model_files``: the generated checkpoint, CLIP vision, LoRA and embedding VAE files for the
  real loaders;
- ``trained_model``: the briefly trained tiny SD1.5 (a real denoiser) and its dataset;
- ``workflows``: executing API prompts with ComfyUI's validator and executor, reading their images;
- ``inversion_runs``: inverting and reconstructing a latent through the nodes.

Import the submodule that holds a thing (``from harness import tiny_models``); this package
re-exports nothing. Plain functions only (fixtures live in tests/conftest.py). Nothing here mocks
ComfyUI: every model, loader, validator and executor is the real one. The modules import
scripts/comfy_cli.py by its module name, so scripts/ must be on sys.path next to tests/ (pytest:
pyproject.toml's pythonpath; bench/common.py for the benchmarks; scripts/ itself for report.py).
"""
