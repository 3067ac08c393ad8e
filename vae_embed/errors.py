"""The error of a wrong input to the variations node (Stochastic Embeddings): its batch, words or
embedding VAE."""

from __future__ import annotations

from ..base.errors import PromptEditError


class VariationInputError(PromptEditError):
    """A user input of Stochastic Embeddings is wrong; the message names it and the fix."""
