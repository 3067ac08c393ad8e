"""Names shared by the pack's nodes."""

CATEGORY_ROOT = "prompt_edit"
CATEGORY_P2P = f"{CATEGORY_ROOT}/prompt-to-prompt"
CATEGORY_INVERSION = f"{CATEGORY_ROOT}/inversion"

P2P_EDIT = "P2P_EDIT"
P2P_ATTENTION = "P2P_ATTENTION"
INVERSION = "NULL_TEXT_INVERSION"
