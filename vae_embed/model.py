"""The embedding VAE of the stochastic-embedding paper: a timestep-conditioned VAE over one text (or
null-text) embedding ``[tokens, dim]`` that samples varied versions of it.

Three architectures, as the paper compares them:

* ``token_mlp``: one MLP applied to every token alone (a latent per token). The paper found it
  makes textures uniform; kept as the cheap baseline.
* ``sequence_mlp``: a 1x1 convolution first reduces every token's channels (``dim → reduced``, for
  memory), then an MLP over the whole flattened sequence (one latent per sequence), and back.
* ``transformer``: tokens projected to a small width, with position and timestep embeddings, through
  a transformer encoder to a latent per token; a mirrored transformer decodes.

The output is residual, ``embedding + decode(z, t)``, and the decoder's last layer starts at zero:
an untrained VAE returns its input exactly, so training only ever adds variation around a working
embedding, and sampling at temperature 0 (``z = μ``) is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..base.errors import PromptEditError

ARCHITECTURES = ("token_mlp", "sequence_mlp", "transformer")


@dataclass(frozen=True)
class EmbeddingVAEConfig:
    architecture: str
    tokens: int  # embedding length, e.g. 77 (or 154, …)
    dim: int  # channels, e.g. 768 (SD1.x), 1024 (SD2.x), 2048 (SDXL)
    latent: int = 32  # per token (token_mlp, transformer) or per sequence (sequence_mlp)
    hidden: int = 256  # MLP width / transformer width
    reduced: int = 8  # sequence_mlp: channels per token after the 1x1 convolution
    layers: int = 2  # transformer layers per side
    heads: int = 4

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise PromptEditError(f"architecture {self.architecture!r} is not one of {ARCHITECTURES}")
        for name in ("tokens", "dim", "latent", "hidden", "reduced", "layers", "heads"):
            if getattr(self, name) < 1:
                raise PromptEditError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.architecture == "transformer" and self.hidden % self.heads:
            raise PromptEditError(f"hidden {self.hidden} is not a multiple of heads {self.heads}")

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_features(t: torch.Tensor, size: int) -> torch.Tensor:
    """Sinusoidal features ``[batch, size]`` of model timesteps ``t`` (0…999), as the UNet's own."""
    half = size // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, outputs))


class EmbeddingVAE(nn.Module):
    def __init__(self, config: EmbeddingVAEConfig):
        super().__init__()
        self.config = c = config
        self.time = nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden))
        if c.architecture == "token_mlp":
            self.encoder = _mlp(c.dim + c.hidden, c.hidden, 2 * c.latent)
            self.decoder = _mlp(c.latent + c.hidden, c.hidden, c.dim)
        elif c.architecture == "sequence_mlp":
            self.reduce = nn.Conv1d(c.dim, c.reduced, 1)
            self.encoder = _mlp(c.tokens * c.reduced + c.hidden, c.hidden, 2 * c.latent)
            self.decoder = _mlp(c.latent + c.hidden, c.hidden, c.tokens * c.reduced)
            self.expand = nn.Conv1d(c.reduced, c.dim, 1)
        else:
            self.position = nn.Parameter(torch.zeros(c.tokens, c.hidden))
            self.encoder_in = nn.Linear(c.dim, c.hidden)
            self.encoder = self._transformer()
            self.encoder_out = nn.Linear(c.hidden, 2 * c.latent)
            self.decoder_in = nn.Linear(c.latent, c.hidden)
            self.decoder = self._transformer()
            self.decoder_out = nn.Linear(c.hidden, c.dim)
        last = self._last_layer()
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _transformer(self) -> nn.TransformerEncoder:
        c = self.config
        layer = nn.TransformerEncoderLayer(c.hidden, c.heads, 2 * c.hidden, dropout=0.0, batch_first=True,
                                           norm_first=True)
        return nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)

    def _last_layer(self) -> nn.Module:
        arch = self.config.architecture
        return self.expand if arch == "sequence_mlp" else self.decoder_out if arch == "transformer" else self.decoder[-1]

    def _time(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        return self.time(timestep_features(t.expand(batch), self.config.hidden))

    def latent_shape(self, batch: int) -> tuple[int, ...]:
        c = self.config
        return (batch, c.latent) if c.architecture == "sequence_mlp" else (batch, c.tokens, c.latent)

    def encode(self, embedding: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of ``embedding [batch, tokens, dim]`` at model timesteps ``t`` ([1] or [batch])."""
        c, batch = self.config, embedding.shape[0]
        self._check(embedding)
        time = self._time(t, batch)
        if c.architecture == "token_mlp":
            stats = self.encoder(torch.cat([embedding, time[:, None].expand(-1, c.tokens, -1)], dim=-1))
        elif c.architecture == "sequence_mlp":
            reduced = self.reduce(embedding.transpose(1, 2)).flatten(1)
            stats = self.encoder(torch.cat([reduced, time], dim=-1))
        else:
            hidden = self.encoder_in(embedding) + self.position + time[:, None]
            stats = self.encoder_out(self.encoder(hidden))
        mean, log_variance = stats.chunk(2, dim=-1)
        return mean, log_variance.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The change ``[batch, tokens, dim]`` that latent ``z`` makes to the embedding at timesteps ``t``."""
        c, batch = self.config, z.shape[0]
        time = self._time(t, batch)
        if c.architecture == "token_mlp":
            return self.decoder(torch.cat([z, time[:, None].expand(-1, c.tokens, -1)], dim=-1))
        if c.architecture == "sequence_mlp":
            reduced = self.decoder(torch.cat([z, time], dim=-1)).reshape(batch, c.reduced, c.tokens)
            return self.expand(reduced).transpose(1, 2)
        hidden = self.decoder_in(z) + self.position + time[:, None]
        return self.decoder_out(self.decoder(hidden))

    def forward(self, embedding: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sampled embedding, μ, log σ²): the reparameterised sample ``z = μ + temperature·σ·noise``
        decoded onto the input. ``noise`` has :meth:`latent_shape`; pass it so callers control seeds."""
        mean, log_variance = self.encode(embedding, t)
        z = mean + temperature * (0.5 * log_variance).exp() * noise
        return embedding + self.decode(z, t).to(embedding.dtype), mean, log_variance

    def _check(self, embedding: torch.Tensor) -> None:
        c = self.config
        if embedding.dim() != 3 or tuple(embedding.shape[1:]) != (c.tokens, c.dim):
            raise PromptEditError(f"the embedding VAE was made for embeddings [batch, {c.tokens}, {c.dim}], got "
                             f"{list(embedding.shape)}: use a VAE trained for this model and prompt length")


def kl_divergence(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """Exact KL(N(μ, σ²) ‖ N(0, 1)), summed over latent dimensions, averaged over the batch."""
    per_item = 0.5 * (mean.pow(2) + log_variance.exp() - 1.0 - log_variance)
    return per_item.flatten(1).sum(dim=1).mean()
