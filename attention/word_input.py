"""The P2P nodes' word inputs turned into CLIP word sequences, each entry checked.

``tokenize_words`` turns a user's word string into its CLIP word sequence (``clip_words`` with
the node's CLIP; a whitespace split in the tests).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from .errors import P2PInputError
from .step_window import Window

TokenizeWords = Callable[[str], Sequence[str]]


def parse_word_windows(spec: str, tokenize_words: TokenizeWords) -> tuple[tuple[tuple[str, ...], Window], ...]:
    """Parse per-word injection windows, one per line or comma: ``word=end`` or ``word=start-end``."""
    out = []
    for entry in spec.replace("\n", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        if "=" not in entry:
            raise P2PInputError(f"word_windows entry {entry!r} must look like 'word=0.4' or 'word=0.1-0.6'")
        word, bounds = (s.strip() for s in entry.rsplit("=", 1))
        try:
            parts = [float(b) for b in bounds.split("-")] if "-" in bounds.strip("-") else [0.0, float(bounds)]
        except ValueError:
            raise P2PInputError(f"word_windows entry {entry!r}: {bounds!r} is not a fraction or 'start-end'") from None
        if len(parts) != 2:
            raise P2PInputError(f"word_windows entry {entry!r}: give one end fraction or 'start-end'")
        if not all(math.isfinite(b) for b in parts):  # NaN would pass the window's range check
            raise P2PInputError(f"word_windows entry {entry!r}: {bounds!r} is not finite; give a finite number "
                                "from 0 to 1 (or 'start-end')")
        words = tuple(tokenize_words(word))
        if not words:
            raise P2PInputError(f"word_windows entry {entry!r} names no word")
        try:
            window = Window(*parts)
        except P2PInputError as e:
            raise P2PInputError(f"word_windows entry {entry!r}: {e}") from None
        out.append((words, window))
    return tuple(out)


def checked_words(entries: Sequence[str], tokenize_words: TokenizeWords, what: str) -> tuple[tuple[str, ...], ...]:
    """The CLIP word sequence of each entry of the input ``what``; refuses an entry without words."""
    words = tuple(tuple(tokenize_words(e)) for e in entries)
    if any(not w for w in words):
        raise P2PInputError(f"{what}: an entry has no text tokens")
    return words
