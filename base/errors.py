"""The pack's one error base: every error a user can cause derives from it, so a caller (a node,
a script, a test) can tell "fix your input" from a bug."""

from __future__ import annotations


class PromptEditError(ValueError):
    """A user input or file is wrong; the message names it and what to do."""
