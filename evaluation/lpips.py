"""LPIPS (Zhang et al. 2018) on a VGG-16 backbone whose weights the user has locally.

Nothing is downloaded: the weights come from one safetensors file with torchvision's VGG-16 layer
names (``features.0.weight`` … ``features.28.bias``) and, optionally, LPIPS's learnt per-channel
weights ``lin0.weight`` … ``lin4.weight`` (shapes ``[1, C, 1, 1]``). Without them every channel
weighs 1: the uncalibrated "baseline" perceptual distance of the LPIPS paper, reported as such.

distance(x, y) = Σ_l mean_hw( Σ_c w_lc · (x̂_lhwc − ŷ_lhwc)² ), with x̂ the layer-l features
normalised to unit length over channels, for images in [0, 1] (scaled to [-1, 1] and shifted as
LPIPS does). Tapping stops at the last tapped layer, so the classifier head is never needed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..base.errors import PromptEditError
from ..base.safetensors_io import check_tensors, read_safetensors

# torchvision's vgg16().features: conv widths, "M" = max pool; LPIPS taps relu1_2 … relu5_3
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS = (3, 8, 15, 22, 29)  # index (in features) of the ReLU after each tapped conv
_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS's ScalingLayer
_SCALE = (0.458, 0.448, 0.450)


class LPIPSFileError(PromptEditError):
    """An LPIPS weights file cannot be used; the message says why and what to do."""


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for width in _VGG16:
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=False)]
            channels = width
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg16_features()
        widths = [w for w in _VGG16 if w != "M"]
        tap_widths = [widths[1], widths[3], widths[6], widths[9], widths[12]]
        self.lins = nn.ParameterList([nn.Parameter(torch.ones(1, c, 1, 1)) for c in tap_widths])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.calibrated = False
        self.requires_grad_(False).eval()

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised features at the five taps, for ``images [N, 3, H, W]`` in [0, 1]."""
        x = ((images * 2 - 1) - self.shift) / self.scale
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _TAPS:
                out.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
            if index == _TAPS[-1]:
                break
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance per pair of IMAGE batches ``[N, H, W, 3]`` in [0, 1]."""
        a, b = (t[..., :3].movedim(-1, 1).float().to(self.shift.device) for t in (a, b))
        total = 0.0
        for fa, fb, weight in zip(self.taps(a), self.taps(b), self.lins):
            total = total + ((fa - fb).pow(2) * weight).sum(dim=1).mean(dim=(1, 2))
        return total

    @classmethod
    def load(cls, path: str | Path) -> "LPIPS":
        _, tensors = read_safetensors(path, LPIPSFileError, "copy the VGG-16 weights again")
        check_tensors(tensors, path, LPIPSFileError, "copy the VGG-16 weights again")
        model = cls()
        expected = {k: v.shape for k, v in model.features.state_dict().items()}
        given = {k.removeprefix("features."): v for k, v in tensors.items() if k.startswith("features.")}
        missing = sorted(set(expected) - set(given))
        wrong = sorted(k for k in expected if k in given and given[k].shape != expected[k])
        if missing or wrong:
            raise LPIPSFileError(
                f"{path}: not VGG-16 weights in torchvision's layout (missing {missing[:3]}, wrong shape {wrong[:3]}); "
                "save torchvision's vgg16().features state dict (keys features.N.weight/bias) as safetensors")
        model.features.load_state_dict({k: v.float() for k, v in given.items() if k in expected})
        lins = [tensors.get(f"lin{i}.weight") for i in range(5)]
        if any(lin is not None for lin in lins):
            for i, (lin, parameter) in enumerate(zip(lins, model.lins)):
                if lin is None or lin.numel() != parameter.numel():
                    raise LPIPSFileError(f"{path}: lin{i}.weight is missing or has the wrong size (need {parameter.numel()})")
                parameter.data.copy_(lin.float().reshape(parameter.shape).clamp_min(0))
            model.calibrated = True
        return model
