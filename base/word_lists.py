"""Word lists as users type them into a node's text input (plain Python)."""

from __future__ import annotations


def split_word_list(spec: str) -> list[str]:
    """Split a user's word list (``"cat, teddy bear"``) into entries (``["cat", "teddy bear"]``):
    commas or new lines separate entries, blanks around them and empty entries are dropped."""
    return [w.strip() for w in spec.replace("\n", ",").split(",") if w.strip()]
