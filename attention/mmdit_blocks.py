"""Which transformer blocks of an MMDiT (Flux, SD3) the edit runs in: P2P Attention Control's
``mmdit_blocks`` input, as the blocks' ``dit`` patch keys (plain Python)."""

from __future__ import annotations

from .errors import P2PInputError

BlockKey = tuple[str, int]  # a transformer block as its ``dit`` patch key: ("double_block", 3)
BLOCK_KINDS = {"double": "double_block", "joint": "double_block", "single": "single_block"}
ALL_BLOCKS = "all"


def select_blocks(spec: str, blocks: list[BlockKey]) -> frozenset[BlockKey] | None:
    """The blocks named by the ``mmdit_blocks`` input (None = every block): ``all``, or entries
    such as ``double``, ``single``, ``double 0-9``, ``single 5`` (SD3's joint blocks are its
    ``double`` blocks; ``joint`` names them too), comma separated, ranges inclusive."""
    if spec.strip().lower() in ("", ALL_BLOCKS):
        return None
    counts: dict[str, int] = {}
    for kind, _ in blocks:
        counts[kind] = counts.get(kind, 0) + 1
    chosen: set[BlockKey] = set()
    for entry in spec.replace("\n", ",").split(","):
        words = entry.split()
        if not words:
            continue
        kind = BLOCK_KINDS.get(words[0].lower())
        if kind is None or len(words) > 2:
            raise P2PInputError(
                f"mmdit_blocks: {entry.strip()!r} is not a block entry; write 'all', or entries like 'double', "
                "'single', 'double 0-9', 'single 5' separated by commas")
        count = counts.get(kind, 0)
        if not count:
            raise P2PInputError(f"mmdit_blocks: this model has no {words[0]} blocks "
                                "(SD3 / SD3.5 has joint blocks only: name them 'joint' or 'double')")
        first, last = 0, count - 1
        if len(words) == 2:
            try:
                bounds = [int(b) for b in words[1].split("-")]
            except ValueError:
                raise P2PInputError(f"mmdit_blocks: {entry.strip()!r}: {words[1]!r} is not a block index "
                                    "or a range like 0-9") from None
            first, last = bounds[0], bounds[-1]
            if len(bounds) > 2 or not 0 <= first <= last < count:
                raise P2PInputError(f"mmdit_blocks: {entry.strip()!r}: this model has {words[0]} blocks "
                                    f"0-{count - 1}")
        chosen.update((kind, i) for i in range(first, last + 1))
    if not chosen:
        raise P2PInputError("mmdit_blocks: it names no block; write 'all' or e.g. 'double 0-9'")
    return frozenset(chosen)
