"""ComfyUI node classes of the pack (thin: validation and host types; the work is in the core)."""

from .host import require_supported_comfyui

require_supported_comfyui()  # before the node modules, which import what it checks

from .embedding_vae import (
    LoadEmbeddingVAE,
    TrainConditionalEmbeddingVAE,
    TrainEmbeddingVAE,
)
from .evaluation import EditMetrics
from .input_guard import guard_inputs
from .inversion import (
    ApplyInversion,
    InvertImage,
    LoadInversion,
    ReconstructionMetrics,
    SaveInversion,
)
from .keep_outside import KeepMaskComposite, KeepOutsideMaskNode
from .p2p_control import P2PAttentionControl
from .p2p_edits import P2PLocalBlend, P2PReweight
from .p2p_maps import P2PAttentionMaps
from .p2p_prompts import P2PPrompts, P2PPromptsQwenImageEdit
from .variations import StochasticEmbeddings

NODE_CLASS_MAPPINGS = {
    "PromptEditP2PPrompts": P2PPrompts,
    "PromptEditP2PPromptsQwenImageEdit": P2PPromptsQwenImageEdit,
    "PromptEditP2PReweight": P2PReweight,
    "PromptEditP2PLocalBlend": P2PLocalBlend,
    "PromptEditP2PAttentionControl": P2PAttentionControl,
    "PromptEditP2PAttentionMaps": P2PAttentionMaps,
    "PromptEditInvertImage": InvertImage,
    "PromptEditApplyInversion": ApplyInversion,
    "PromptEditSaveInversion": SaveInversion,
    "PromptEditLoadInversion": LoadInversion,
    "PromptEditReconstructionMetrics": ReconstructionMetrics,
    "PromptEditKeepOutsideMask": KeepOutsideMaskNode,
    "PromptEditKeepMaskComposite": KeepMaskComposite,
    "PromptEditStochasticEmbeddings": StochasticEmbeddings,
    "PromptEditTrainEmbeddingVAE": TrainEmbeddingVAE,
    "PromptEditTrainConditionalEmbeddingVAE": TrainConditionalEmbeddingVAE,
    "PromptEditLoadEmbeddingVAE": LoadEmbeddingVAE,
    "PromptEditEditMetrics": EditMetrics,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PromptEditP2PPrompts": "P2P Prompts",
    "PromptEditP2PPromptsQwenImageEdit": "P2P Prompts (Qwen-Image-Edit)",
    "PromptEditP2PReweight": "P2P Reweight",
    "PromptEditP2PLocalBlend": "P2P Local Blend",
    "PromptEditP2PAttentionControl": "P2P Attention Control",
    "PromptEditP2PAttentionMaps": "P2P Attention Maps",
    "PromptEditInvertImage": "Invert Image (Null-Text)",
    "PromptEditApplyInversion": "Apply Inversion",
    "PromptEditSaveInversion": "Save Inversion",
    "PromptEditLoadInversion": "Load Inversion",
    "PromptEditReconstructionMetrics": "Reconstruction Metrics",
    "PromptEditKeepOutsideMask": "Keep Outside Mask",
    "PromptEditKeepMaskComposite": "Keep Mask Composite",
    "PromptEditStochasticEmbeddings": "Stochastic Embeddings (Variations)",
    "PromptEditTrainEmbeddingVAE": "Train Embedding VAE (Null-Text)",
    "PromptEditTrainConditionalEmbeddingVAE": "Train Embedding VAE (Conditional)",
    "PromptEditLoadEmbeddingVAE": "Load Embedding VAE",
    "PromptEditEditMetrics": "Edit Metrics (PSNR, SSIM, CLIP, LPIPS)",
}

# every node refuses NaN / infinity in its numbers and tensors before it runs (input_guard)
for _name, _node_class in NODE_CLASS_MAPPINGS.items():
    guard_inputs(_node_class, NODE_DISPLAY_NAME_MAPPINGS[_name])
