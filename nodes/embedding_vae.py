"""Embedding-VAE nodes: train a null-text or a conditional VAE in the graph, save it, load it."""

from __future__ import annotations

import logging
import os
from typing import Callable

import comfy.model_management
import comfy.samplers
import comfy.utils
import folder_paths
import torch

from ..base.errors import PromptEditError
from ..base.file_names import check_file_name
from ..base.finite import check_finite_tensor
from ..base.fingerprint import model_fingerprint
from ..inversion.comfy_model import autograd_copy, eps_function, gradients_through
from ..inversion.result import Inversion
from ..vae_embed.checkpoint import EmbeddingVAEFileError, TrainedEmbeddingVAE
from ..vae_embed.comfy_training import (
    edit_trajectory,
    embedding_text_features,
    latent_image_features,
    photo_trajectories,
    step_tensors,
    training_schedule,
)
from ..vae_embed.model import ARCHITECTURES, EmbeddingVAE, EmbeddingVAEConfig
from ..vae_embed.training import (
    ConditionalVAESettings,
    NullTextVAESettings,
    train_conditional_vae,
    train_null_text_vae,
)
from .common import (
    CATEGORY_VARIATIONS,
    EMBEDDING_VAE,
    INVERSION,
    model_file_check,
    register_model_folder,
    writable_model_folder,
)
from .input_guard import check_conditioning

FOLDER = register_model_folder("embedding_vae")


SAVED_SUFFIX = ".safetensors"
CANCELLED_SUFFIX = ".cancelled.safetensors"  # a cancelled run's file, beside a finished one it must not replace


def _check_name(save_as: object, directory: str | None = None) -> str:
    """The name to save under ('' for none), checked before the training starts."""
    name = save_as.strip() if isinstance(save_as, str) else save_as
    return name and check_file_name(name, "save_as", CANCELLED_SUFFIX, directory)


def _save(trained: TrainedEmbeddingVAE, name: str, cancelled: bool = False) -> str:
    """Save under ``name``; a cancelled run never replaces a file that is there (a finished run's,
    kept until a new run finishes) but goes beside it. Returns the path written."""
    directory = writable_model_folder(FOLDER)
    path = os.path.join(directory, name + SAVED_SUFFIX)
    if cancelled and os.path.exists(path):
        path = os.path.join(directory, name + CANCELLED_SUFFIX)
    trained.save(path)
    return path


def _run_training(train: Callable[[Callable, Callable], list[float]], vae: EmbeddingVAE, target: str, model,
                  iterations: int, name: str) -> dict:
    """Run ``train(progress, check_interrupt)`` with a progress bar; save (also when cancelled, so the
    iterations done are kept) and return the node's result with a loss summary for the UI."""
    bar = comfy.utils.ProgressBar(iterations)
    done = [0]

    def progress(step: int, total: int, loss: float) -> None:
        done[0] = step
        bar.update_absolute(step, total)
        if step == 1 or step % max(1, total // 10) == 0 or step == total:
            logging.info("embedding VAE (%s): iteration %d/%d, loss %.5g", target, step, total, loss)

    def finish(cancelled: bool = False) -> TrainedEmbeddingVAE:
        for weight in vae.parameters():  # a diverged training is refused, not saved
            check_finite_tensor(weight, "learning_rate (the trained VAE's weights)",
                                "the training diverged; train again with a lower learning_rate")
        trained = TrainedEmbeddingVAE(vae.cpu().eval().requires_grad_(False), target, model_fingerprint(model), done[0])
        if name:
            path = _save(trained, name, cancelled)
            if cancelled:
                logging.warning("embedding VAE training cancelled after %d of %d iterations; saved to %s",
                                done[0], iterations, path)
        return trained

    try:
        losses = train(progress, comfy.model_management.throw_exception_if_processing_interrupted)
    except comfy.model_management.InterruptProcessingException:
        if name and done[0]:
            finish(cancelled=True)
        raise
    trained = finish()
    tenth = max(1, len(losses) // 10)
    summary = (f"loss {sum(losses[:tenth]) / tenth:.4g} -> {sum(losses[-tenth:]) / tenth:.4g} "
               f"(first / last tenth of {len(losses)} iterations)")
    return {"ui": {"text": [summary]}, "result": (trained,)}


def _photo(latent, inversion) -> torch.Tensor:
    if inversion is not None:
        if latent is not None:
            raise PromptEditError("latent / inversion: connect one of them; the inversion already holds its photo")
        return inversion.source
    if latent is None:
        raise PromptEditError("latent / inversion: connect the photo's latent (VAE Encode) or its inversion")
    return latent["samples"]


_COMMON_INPUTS = {
    "architecture": (ARCHITECTURES, {"default": "sequence_mlp", "tooltip": (
        "token_mlp: per token (cheap, uniform textures); sequence_mlp: the whole sequence after a 1x1-conv "
        "channel reduction; transformer: a small transformer.")}),
    "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "ddim_uniform", "tooltip": (
        "The schedule you will sample with (an inversion brings its own).")}),
    "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": (
        "The sampler's steps (an inversion brings its own).")}),
    "guidance": ("FLOAT", {"default": 7.5, "min": 1.01, "max": 30.0, "step": 0.1, "tooltip": (
        "The cfg you will sample with.")}),
    "iterations": ("INT", {"default": 500, "min": 1, "max": 100000, "tooltip": (
        "Training iterations (each: one UNet step, forward and backward).")}),
    "learning_rate": ("FLOAT", {"default": 1e-3, "min": 1e-6, "max": 1.0, "step": 1e-5, "tooltip": (
        "AdamW's learning rate.")}),
    "kl_weight": ("FLOAT", {"default": 1e-4, "min": 0.0, "max": 10.0, "step": 1e-5, "tooltip": (
        "β, reached at the top of each cyclical annealing cycle.")}),
    "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "tooltip": (
        "Seeds the draws and the choice of steps.")}),
    "save_as": ("STRING", {"default": "", "tooltip": (
        "If set, saved as models/embedding_vae/<name>.safetensors (when cancelled: there if no such file is "
        "there yet, else beside it as <name>.cancelled.safetensors).")}),
}


class _Trainer:
    """What the two training nodes share: their place in the menu and their output."""

    CATEGORY = CATEGORY_VARIATIONS
    FUNCTION = "train"
    RETURN_TYPES = (EMBEDDING_VAE,)
    RETURN_NAMES = ("embedding_vae",)
    OUTPUT_TOOLTIPS = ("The trained VAE, for Stochastic Embeddings (mode 'embedding VAE').",)

    @classmethod
    def VALIDATE_INPUTS(cls, save_as=None):
        # before any node of the prompt runs (None: save_as comes from a link, checked in train)
        try:
            _check_name(save_as, folder_paths.get_folder_paths(FOLDER)[0])
        except PromptEditError as e:
            return str(e)
        return True


class TrainEmbeddingVAE(_Trainer):
    DESCRIPTION = (
        "Trains a null-text embedding VAE (the stochastic-embedding paper, eq. 1): its draws of the null "
        "text must still reconstruct the photo(s) through one guided DDIM step (α·reconstruction + β·KL, "
        "cyclical KL annealing). Give one photo, or a batch of photos of one class with one prompt. With "
        "an inversion of the photo, the VAE varies its optimised null texts."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": (
                    "The model the VAE is for (its fingerprint is stored with the VAE).")}),
                "positive": ("CONDITIONING", {"tooltip": "A description of the photo(s)."}),
                "negative": ("CONDITIONING", {"tooltip": "The null text, usually an empty prompt."}),
                **_COMMON_INPUTS,
            },
            "optional": {
                "latent": ("LATENT", {"tooltip": (
                    "The photo(s) from VAE Encode; several photos of one class train one VAE. Not needed "
                    "with an inversion.")}),
                "inversion": (INVERSION, {"tooltip": (
                    "A null-text inversion of one photo: its photo, schedule and optimised null texts "
                    "are used.")}),
            },
        }

    def train(self, model, positive, negative, architecture: str, scheduler: str, steps: int, guidance: float,
              iterations: int, learning_rate: float, kl_weight: float, seed: int, save_as: str,
              latent: dict | None = None, inversion: Inversion | None = None):
        name = _check_name(save_as, folder_paths.get_folder_paths(FOLDER)[0])
        settings = NullTextVAESettings(iterations, 2, learning_rate, 1.0, kl_weight, 4, guidance, seed)
        cond, cond_extras = positive[0]
        null, null_extras = negative[0]
        samples, sigmas = _photo(latent, inversion), training_schedule(model, inversion, scheduler, steps)
        with gradients_through(model) as device:  # nodes run in inference mode; training needs autograd
            vae = EmbeddingVAE(EmbeddingVAEConfig(architecture, null.shape[1], null.shape[2])).to(device)
            sig, timesteps, nulls = step_tensors(model, sigmas, inversion, null)
            trajectories = photo_trajectories(model, samples, cond, cond_extras, sig, timesteps, nulls)
            eps_u = eps_function(model, null_extras, samples[:1].shape)
            return _run_training(
                lambda progress, interrupt: train_null_text_vae(vae, eps_u, trajectories, settings, progress, interrupt),
                vae, "null-text", model, iterations, name)


class TrainConditionalEmbeddingVAE(_Trainer):
    DESCRIPTION = (
        "Trains a conditional embedding VAE (the stochastic-embedding paper, eq. 4): draws of the edit "
        "prompt's embedding whose images stay close to the prompt in CLIP space (cross-matched CLIP loss, "
        "eq. 2) while differing from each other (diversity loss, eq. 3, γ < 0), plus KL with cyclical "
        "annealing. As in the paper, the edit is sampled once and kept; each iteration runs one UNet step "
        "from a kept latent at a random step and decodes its x0 prediction. Needs a CLIP vision model "
        "that matches the checkpoint's text encoder (e.g. ViT-L/14 for SD1.x), loaded locally."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": (
                    "The model the VAE is for (its fingerprint is stored with the VAE).")}),
                "clip": ("CLIP", {"tooltip": (
                    "The checkpoint's CLIP: encodes edit_prompt and projects embeddings into CLIP space.")}),
                "vae": ("VAE", {"tooltip": "The checkpoint's VAE: decodes the predicted images."}),
                "clip_vision": ("CLIP_VISION", {"tooltip": (
                    "From Load CLIP Vision; its image features are compared with the text, its hidden states "
                    "feed the diversity loss.")}),
                "edit_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": (
                    "The edited prompt C' whose embedding the VAE varies.")}),
                "negative": ("CONDITIONING", {"tooltip": "The null text, usually an empty prompt."}),
                "latent": ("LATENT", {"tooltip": (
                    "Start latent: an empty latent (noise is added with seed), or the noisy latent of an "
                    "inversion (connect the inversion too).")}),
                **_COMMON_INPUTS,
                "variations": ("INT", {"default": 2, "min": 2, "max": 16, "tooltip": (
                    "Draws per iteration (the diversity loss compares them).")}),
                "clip_lambda": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": (
                    "λ of eq. 2: weight of D(E_I(I''), C') against D(E_I(I'), C'').")}),
                "diversity_weight": ("FLOAT", {"default": -0.1, "min": -10.0, "max": 0.0, "step": 0.01,
                                               "tooltip": "γ of eq. 4 (≤ 0)."}),
            },
            "optional": {
                "inversion": (INVERSION, {"tooltip": (
                    "With the inversion's noisy latent as latent: its schedule and null texts are used.")}),
            },
        }

    def train(self, model, clip, vae, clip_vision, edit_prompt: str, negative, latent, architecture: str,
              scheduler: str, steps: int, guidance: float, iterations: int, learning_rate: float, kl_weight: float,
              seed: int, save_as: str, variations: int, clip_lambda: float, diversity_weight: float,
              inversion: Inversion | None = None):
        name = _check_name(save_as, folder_paths.get_folder_paths(FOLDER)[0])
        if not edit_prompt.strip():
            raise PromptEditError("edit_prompt: write the edited prompt whose embedding the VAE should vary")
        settings = ConditionalVAESettings(iterations, variations, learning_rate, 1.0, kl_weight, diversity_weight,
                                          clip_lambda, 4, guidance, seed)
        null, null_extras = negative[0]
        samples = latent["samples"][:1]
        sigmas = training_schedule(model, inversion, scheduler, steps)
        # nodes run in inference mode; training needs autograd
        with gradients_through(model, vae.patcher, clip_vision.patcher, clip.patcher) as device:
            text_features, conditioning = embedding_text_features(clip, edit_prompt)
            check_conditioning(conditioning, "Train Embedding VAE (Conditional): edit_prompt")  # e.g. '(cat:nan)'
            edit, edit_extras = conditioning[0]
            if edit.shape[1:] != null.shape[1:]:
                raise PromptEditError(f"edit_prompt / negative: {edit.shape[1]} and {null.shape[1]} token columns; keep the edit "
                                 "prompt under 75 tokens")
            schedule = step_tensors(model, sigmas, inversion, null)
            edit_t = autograd_copy(edit[:1], device)
            eps = eps_function(model, edit_extras, samples.shape)
            eps_u = eps_function(model, null_extras, samples.shape)
            image_features = latent_image_features(model, vae, clip_vision)
            path = edit_trajectory(model, samples, lambda x, s: eps(x, s, edit_t), eps_u, schedule, guidance,
                                   image_features, noise_seed=seed if inversion is None else None)
            embedding_vae = EmbeddingVAE(EmbeddingVAEConfig(architecture, edit.shape[1], edit.shape[2])).to(device)
            return _run_training(
                lambda progress, interrupt: train_conditional_vae(embedding_vae, eps, edit_t, text_features, image_features,
                                                                  [path], settings, progress, interrupt),
                embedding_vae, "conditional", model, iterations, name)


class LoadEmbeddingVAE:
    DESCRIPTION = "Loads an embedding VAE from models/embedding_vae/ (safetensors only)."
    CATEGORY = CATEGORY_VARIATIONS
    FUNCTION = "load"
    RETURN_TYPES = (EMBEDDING_VAE,)
    RETURN_NAMES = ("embedding_vae",)
    OUTPUT_TOOLTIPS = ("For Stochastic Embeddings (mode 'embedding VAE').",)

    @classmethod
    def INPUT_TYPES(cls):
        files = folder_paths.get_filename_list(FOLDER)
        return {"required": {"vae_name": (files, {"tooltip": "A file in models/embedding_vae/."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, vae_name: str):
        return model_file_check(FOLDER, vae_name, (
            "train it first: the example workflow variations_train_null_text_vae.json (null-text VAE) or "
            "variations_train_conditional_vae.json (conditional VAE), or a 'Train Embedding VAE' node, saves it there"))

    def load(self, vae_name: str):
        path = folder_paths.get_full_path(FOLDER, vae_name)
        if path is None:
            raise EmbeddingVAEFileError(f"vae_name: {vae_name!r} is not in models/{FOLDER}/")
        try:
            trained = TrainedEmbeddingVAE.load(path)
        except EmbeddingVAEFileError as e:
            raise EmbeddingVAEFileError(f"vae_name: {e}") from None
        # a training that was cancelled saves what it learnt: say how far it got
        logging.info("embedding VAE %s: %s, %s, trained %d iterations", vae_name, trained.target,
                     trained.vae.config.architecture, trained.steps_trained)
        return (trained,)
