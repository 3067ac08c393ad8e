"""Embedding-VAE checkpoints: safetensors weights with the configuration in the metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..base.errors import PromptEditError
from ..base.safetensors_io import check_tensors, read_safetensors, write_safetensors
from .model import EmbeddingVAE, EmbeddingVAEConfig

FORMAT = "comfyui-prompt-edit/embedding-vae/v1"
TARGETS = ("null-text", "conditional")
AGAIN = "train or copy it again"
# Bounds on a saved configuration, far above any real one (SDXL: 77-231 tokens of 2048 channels),
# checked before anything is built from it: a file's metadata must not make the loader allocate.
CONFIG_MAXIMA = {"tokens": 4096, "dim": 16384, "latent": 16384, "hidden": 16384, "reduced": 4096, "layers": 64,
                 "heads": 256}


class EmbeddingVAEFileError(PromptEditError):
    """A saved embedding VAE cannot be used; the message says why and what to do."""


def _config(text: str) -> EmbeddingVAEConfig:
    """The configuration saved as JSON ``text``, its numbers bounded (EmbeddingVAEFileError / TypeError when not)."""
    values = json.loads(text)
    if not isinstance(values, dict):
        raise EmbeddingVAEFileError("the config is not a JSON object")
    for key, value in values.items():
        if key in CONFIG_MAXIMA and (type(value) is not int or not 1 <= value <= CONFIG_MAXIMA[key]):
            raise EmbeddingVAEFileError(f"config {key} = {value!r} is not a whole number in 1..{CONFIG_MAXIMA[key]}")
    return EmbeddingVAEConfig(**values)


@dataclass
class TrainedEmbeddingVAE:
    """An embedding VAE with what it was trained for: the embedding it perturbs (``target``), a
    fingerprint of the diffusion model it was trained with (``model_fingerprint``, a record: where
    it is applied only the VAE's embedding width is checked against the model's) and the training
    iterations it had (``steps_trained``: fewer than asked when the training was cancelled; Load
    Embedding VAE reports it)."""

    vae: EmbeddingVAE
    target: str  # "null-text" or "conditional"
    model_fingerprint: str = ""
    steps_trained: int = 0

    def save(self, path: str | Path) -> None:
        meta = {"format": FORMAT, "config": json.dumps(self.vae.config.to_dict()), "target": self.target,
                "model_fingerprint": self.model_fingerprint, "steps_trained": str(self.steps_trained)}
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in self.vae.state_dict().items()}
        write_safetensors(tensors, path, meta)

    @classmethod
    def load(cls, path: str | Path) -> "TrainedEmbeddingVAE":
        meta, tensors = read_safetensors(path, EmbeddingVAEFileError, AGAIN)
        if meta.get("format") != FORMAT:
            raise EmbeddingVAEFileError(f"{path}: not an embedding VAE saved by this pack (format {meta.get('format')!r})")
        try:
            config = _config(meta["config"])
            target = meta["target"]
            steps_trained = int(meta.get("steps_trained", "0"))
        except (KeyError, TypeError, ValueError) as e:
            raise EmbeddingVAEFileError(f"{path}: damaged metadata ({e}); {AGAIN}") from None
        if target not in TARGETS:
            raise EmbeddingVAEFileError(f"{path}: unknown target {target!r} (expected one of {TARGETS})")
        with torch.device("meta"):  # the shapes the configuration makes, without allocating them
            expected = EmbeddingVAE(config).state_dict()
        wrong = sorted(k for k in expected if k in tensors and tensors[k].shape != expected[k].shape)
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if wrong or missing or extra:
            detail = "; ".join(part for part in (
                wrong and f"wrong shape: {wrong[:3]}", missing and f"missing: {missing[:3]}", extra and f"unexpected: {extra[:3]}") if part)
            raise EmbeddingVAEFileError(f"{path}: the weights do not match the saved configuration ({detail}); "
                                        "the file is damaged or was edited, train it again")
        # the weights match the configuration, so building it allocates no more than the file holds
        check_tensors(tensors, path, EmbeddingVAEFileError, AGAIN)
        vae = EmbeddingVAE(config)
        vae.load_state_dict({k: v.float() for k, v in tensors.items()})
        return cls(vae.eval().requires_grad_(False), target, meta.get("model_fingerprint", ""), steps_trained)
