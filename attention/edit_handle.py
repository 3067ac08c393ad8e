"""The edit handle: what 'P2P Attention Control' hands on as P2P_ATTENTION, whichever attention the
model has (plain torch).

The UNet's cross-attention edit (:class:`.unet_controller.P2PController`) and the joint-attention
edits (:class:`.mmdit_edit.QKEdit`, :class:`.mmdit_probabilities.ProbabilitiesEdit`) keep the same
state under the same names, so local blend, the installers' per-run reset and 'P2P Attention Maps'
use any of them alike, without asking which it is.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .edit_spec import P2PEdit
from .map_store import AttentionMapStore


class EditHandle(Protocol):
    @property
    def edit(self) -> P2PEdit:
        """The prompts being edited (source first) and the edit's settings."""

    @property
    def store(self) -> AttentionMapStore:
        """The word maps of the last sampling run."""

    def reset(self) -> None:
        """Forget the previous sampling run (called when a run starts)."""

    def blend(self, x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor,
              schedule: torch.Tensor | None) -> torch.Tensor:
        """Local blend of the edited items' denoised latents with the source's (post-CFG)."""

    def map_places(self, requested: tuple[str, ...]) -> tuple[str, ...]:
        """The map store's places that hold the maps of ``requested`` (the UNet's input / output
        levels; a joint attention records all of its maps in one place)."""
