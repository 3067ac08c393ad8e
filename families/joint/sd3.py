"""SD3 and SD3.5: joint blocks over ``[text, image]`` (text = CLIP-L‖G's 77·k columns then T5's),
some SD3.5 blocks with a second, image-only attention that the edit leaves alone; real CFG."""

from __future__ import annotations

from ...attention.edit_spec import T5_ENCODER
from ..registry import JOINT_ATTENTION, ModelFamily

SD3 = ModelFamily(id="sd3", name="SD3 / SD3.5", model_classes=("SD3",), attention=JOINT_ATTENTION,
                  text_encoders=(T5_ENCODER,), blocks=(("joint_blocks", "double_block"),), added_in="0.3.64")
