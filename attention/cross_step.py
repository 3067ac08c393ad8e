"""The coefficients of one sampling step's cross-attention edit, as the attention patch uses them.

Per edited item and target column ``j``:
``M_new[:, j] = c_src[j] · (M_source @ mapper)[:, j] + c_own[j] · M_edit[:, j]``
(:mod:`.edit_plan` says how each edit kind sets them; :mod:`.edited_attention` applies them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CrossStep:
    """Coefficients of one sampling step, for edits ``1..E`` (rows) over conditioning columns.

    The flags are computed once on the CPU so the attention patch never waits on the GPU.
    """

    mapper: torch.Tensor  # [E, N, N]
    c_src: torch.Tensor  # [E, N]
    c_own: torch.Tensor  # [E, N]
    use_src: bool
    use_own: bool
    is_identity: bool  # nothing to do: every edited branch keeps its own attention

    def to(self, device: torch.device, dtype: torch.dtype) -> "CrossStep":
        return CrossStep(
            self.mapper.to(device, dtype), self.c_src.to(device, dtype), self.c_own.to(device, dtype),
            self.use_src, self.use_own, self.is_identity,
        )
