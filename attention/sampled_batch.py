"""Before sampling: does the sampler sample the P2P batch? (plain Python on the guider's conds)."""

from __future__ import annotations

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
