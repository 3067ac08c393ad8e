"""The error of a wrong input to a Prompt-to-Prompt node (prompts, words, windows, model, batch)."""

from __future__ import annotations

from ..base.errors import PromptEditError


class P2PInputError(PromptEditError):
    """A user input of a Prompt-to-Prompt node is wrong; the message names it and the fix."""
