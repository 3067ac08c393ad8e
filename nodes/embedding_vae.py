"""Embedding-VAE nodes: train a null-text VAE in the graph, save it, load it."""

from __future__ import annotations

import os
import re

import comfy.model_management
import comfy.samplers
import comfy.utils
import folder_paths
import torch

from ..inversion.comfy_model import eps_function, load_for_gradients, sampling_sigmas
from ..inversion.comfy_patch import model_fingerprint
from ..inversion.ddim import ddim_invert
from ..inversion.result import Inversion
from ..vae_embed.checkpoint import EmbeddingVAEFileError, TrainedEmbeddingVAE
from ..vae_embed.model import ARCHITECTURES, EmbeddingVAE, EmbeddingVAEConfig
from ..vae_embed.training import NullTextVAESettings, Trajectory, train_null_text_vae
from .common import CATEGORY_VARIATIONS, EMBEDDING_VAE, INVERSION

FOLDER = "embedding_vae"
folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER), is_default=True)
folder_paths.folder_names_and_paths[FOLDER] = (folder_paths.folder_names_and_paths[FOLDER][0], {".safetensors"})


def _check_name(name: str) -> str:
    name = name.strip()
    if name and not re.fullmatch(r"[\w.\- ]+", name):
        raise ValueError(f"save_as: {name!r} may hold only letters, digits, spaces, '.', '-' and '_'")
    return name


class TrainEmbeddingVAE:
    DESCRIPTION = (
        "Trains a null-text embedding VAE (the stochastic-embedding paper, eq. 1): its draws of the null "
        "text must still reconstruct the photo(s) through one guided DDIM step (α·reconstruction + β·KL, "
        "cyclical KL annealing). Give one photo, or a batch of photos of one class with one prompt. With "
        "an inversion of the photo, the VAE varies its optimised null texts."
    )
    CATEGORY = CATEGORY_VARIATIONS
    FUNCTION = "train"
    RETURN_TYPES = (EMBEDDING_VAE,)
    RETURN_NAMES = ("embedding_vae",)
    OUTPUT_TOOLTIPS = ("The trained VAE, for Stochastic Embeddings (mode 'embedding VAE').",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {}),
                "positive": ("CONDITIONING", {"tooltip": "A description of the photo(s)."}),
                "negative": ("CONDITIONING", {"tooltip": "The null text, usually an empty prompt."}),
                "architecture": (ARCHITECTURES, {"default": "sequence_mlp"}),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "ddim_uniform"}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 1000}),
                "guidance": ("FLOAT", {"default": 7.5, "min": 1.01, "max": 30.0, "step": 0.1}),
                "iterations": ("INT", {"default": 500, "min": 1, "max": 100000}),
                "learning_rate": ("FLOAT", {"default": 1e-3, "min": 1e-6, "max": 1.0, "step": 1e-5}),
                "kl_weight": ("FLOAT", {"default": 1e-4, "min": 0.0, "max": 10.0, "step": 1e-5, "tooltip": "β, reached at the top of each cyclical annealing cycle."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF}),
                "save_as": ("STRING", {"default": "", "tooltip": "If set, saved as models/embedding_vae/<name>.safetensors."}),
            },
            "optional": {
                "latent": ("LATENT", {"tooltip": "The photo(s) from VAE Encode; several photos of one class train one VAE. Not needed with an inversion."}),
                "inversion": (INVERSION, {"tooltip": "A null-text inversion of one photo: its photo, schedule and optimised null texts are used."}),
            },
        }

    def train(self, model, positive, negative, architecture: str, scheduler: str, steps: int, guidance: float,
              iterations: int, learning_rate: float, kl_weight: float, seed: int, save_as: str,
              latent: dict | None = None, inversion: Inversion | None = None):
        name = _check_name(save_as)
        settings = NullTextVAESettings(iterations, 2, learning_rate, 1.0, kl_weight, 4, guidance, seed)
        cond, cond_extras = positive[0]
        null, null_extras = negative[0]
        if inversion is not None:
            if latent is not None:
                raise ValueError("latent / inversion: connect one of them; the inversion already holds its photo")
            samples = inversion.source
            if inversion.model_fingerprint != model_fingerprint(model):
                raise ValueError("inversion: it was made with another model; invert the photo with this model")
            sigmas = inversion.sigmas.float()
        elif latent is not None:
            samples = latent["samples"]
            sigmas = sampling_sigmas(model, scheduler, steps)
        else:
            raise ValueError("latent / inversion: connect the photo's latent (VAE Encode) or its inversion")
        bar = comfy.utils.ProgressBar(iterations)
        with torch.inference_mode(False):  # nodes run in inference mode; training needs autograd
            vae = EmbeddingVAE(EmbeddingVAEConfig(architecture, null.shape[1], null.shape[2]))
            load_for_gradients(model)
            device = model.load_device
            model_sampling = model.get_model_object("model_sampling")
            sig = sigmas.clone().to(device)
            cond_t, null_t = cond[:1].clone().float().to(device), null[:1].clone().float().to(device)
            eps_c = eps_function(model, cond_extras, samples[:1].shape)
            eps_u = eps_function(model, null_extras, samples[:1].shape)
            timesteps = model_sampling.timestep(sig[:-1]).float()
            n = len(sigmas) - 1
            nulls = (inversion.unconds.clone().to(device) if inversion is not None else null_t.expand(n, -1, -1).clone())
            trajectories = []
            for k in range(samples.shape[0]):
                x0 = model.model.process_latent_in(samples[k : k + 1].clone().float().to(device))
                pivots = ddim_invert(lambda x, s: eps_c(x, s, cond_t), x0, sig,
                                     check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
                trajectories.append(Trajectory(pivots, sig, timesteps, nulls, lambda x, s: eps_c(x, s, cond_t)))
            vae.to(device)
            train_null_text_vae(vae, eps_u, trajectories, settings,
                                progress=lambda done, total, loss: bar.update_absolute(done, total),
                                check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        trained = TrainedEmbeddingVAE(vae.cpu().requires_grad_(False), "null-text", model_fingerprint(model), iterations)
        if name:
            directory = folder_paths.get_folder_paths(FOLDER)[0]
            os.makedirs(directory, exist_ok=True)
            trained.save(os.path.join(directory, f"{name}.safetensors"))
        return (trained,)


class LoadEmbeddingVAE:
    DESCRIPTION = "Loads an embedding VAE from models/embedding_vae/ (safetensors only)."
    CATEGORY = CATEGORY_VARIATIONS
    FUNCTION = "load"
    RETURN_TYPES = (EMBEDDING_VAE,)
    RETURN_NAMES = ("embedding_vae",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": (folder_paths.get_filename_list(FOLDER), {})}}

    def load(self, vae_name: str):
        path = folder_paths.get_full_path(FOLDER, vae_name)
        if path is None:
            raise EmbeddingVAEFileError(f"vae_name: {vae_name!r} is not in models/{FOLDER}/")
        return (TrainedEmbeddingVAE.load(path),)
