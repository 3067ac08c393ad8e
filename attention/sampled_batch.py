"""Does the sampler sample the P2P batch? Before sampling, on the guider's conds; and in each
attention call, on its chunks (plain Python)."""

from __future__ import annotations

from ..patching.sampling_call import COND, chunk_rows
from .edit_spec import P2PEdit
from .errors import P2PInputError


def check_sampled_batch(edit: P2PEdit, guider, latent_image) -> list[dict]:
    """Refuse a latent or a positive CONDITIONING that is not the 'P2P Prompts' batch; returns the
    positive conds (``guider.conds["positive"]`` entries with a ``cross_attn``)."""
    if latent_image.shape[0] != edit.batch_size:
        raise P2PInputError(
            f"the sampler's latent has {latent_image.shape[0]} item(s) but the P2P prompts make a batch "
            f"of {edit.batch_size} (1 source + {len(edit.targets)} edits); connect the LATENT output of "
            "'P2P Prompts' to the sampler"
        )
    positives = [c for c in guider.conds.get("positive", []) if "cross_attn" in c]
    if not any(c["cross_attn"].shape[0] == edit.batch_size for c in positives):
        raise P2PInputError(
            f"no positive CONDITIONING holds the {edit.batch_size} P2P prompts; connect the "
            "CONDITIONING output of 'P2P Prompts' to the sampler's positive input"
        )
    return positives


def batch_chunks(edit: P2PEdit, extra_options: dict, rows: int) -> list[tuple[slice, bool]] | None:
    """``(rows, conditional?)`` of each chunk of one sampling call of ``rows`` rows (None outside
    sampling); refuses chunks that are not the P2P batch (the sampler was fed another latent)."""
    chunks = chunk_rows(extra_options, rows)
    if chunks is None:
        return None
    size = chunks[0][0].stop
    if size != edit.batch_size:
        raise P2PInputError(
            f"Prompt-to-Prompt: the sampler runs {size} latent items per prompt but the P2P prompts "
            f"hold {edit.batch_size} (1 source + {len(edit.targets)} edits); "
            "feed the LATENT output of 'P2P Prompts' to the sampler")
    return [(r, chunk == COND) for r, chunk in chunks]
