"""Noise schedules: a cosine DDPM for the lattice, a geometric sigma ladder on the torus for
fractional coordinates, and the wrapped-normal score they are trained against."""

from __future__ import annotations

import math

import torch
from torch import nn

WRAP_TERMS = 10  # images k = -10..10 of the wrapped normal: exact in float32 for sigma <= 0.5


def cosine_betas(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal cosine schedule, betas clipped to 0.999."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64)
    f = torch.cos(((steps / timesteps) + s) / (1 + s) * math.pi / 2) ** 2
    alphas_bar = f / f[0]
    betas = 1 - alphas_bar[1:] / alphas_bar[:-1]
    return betas.clamp(max=0.999).float()


def wrapped_normal_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """d/dx log sum_k N(x + k; 0, sigma^2): the score of a wrapped normal on [0, 1)."""
    k = torch.arange(-WRAP_TERMS, WRAP_TERMS + 1, dtype=x.dtype, device=x.device)
    d = x.unsqueeze(-1) + k  # (..., K)
    s2 = (sigma**2).unsqueeze(-1)
    logw = -(d**2) / (2 * s2)
    w = torch.softmax(logw, dim=-1)
    return -(w * d).sum(-1) / sigma**2


class Schedules(nn.Module):
    """Index t runs 1..T; index 0 of every buffer is the clean state."""

    def __init__(self, timesteps: int, sigma_begin: float, sigma_end: float):
        super().__init__()
        betas = torch.cat([torch.zeros(1), cosine_betas(timesteps)])
        alphas = 1 - betas
        self.timesteps = timesteps
        self.register_buffer("betas", betas)
        self.register_buffer("alphas", alphas)
        self.register_buffer("alphas_bar", torch.cumprod(alphas, 0))
        sigmas = torch.exp(torch.linspace(math.log(sigma_begin), math.log(sigma_end), timesteps))
        self.register_buffer("sigmas", torch.cat([torch.zeros(1), sigmas]))
        self.register_buffer("sigmas_norm", torch.cat([torch.ones(1), self._score_norms(sigmas)]))

    @staticmethod
    def _score_norms(sigmas: torch.Tensor, n: int = 5000) -> torch.Tensor:
        """E|score|^2 of each wrapped normal, to train a unit-scale target (as DiffCSP)."""
        gen = torch.Generator().manual_seed(0)
        out = []
        for sigma in sigmas:
            x = torch.randn(n, generator=gen) * sigma
            out.append((wrapped_normal_score(x, sigma.expand(n)) ** 2).mean())
        return torch.stack(out)

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = generator.device if generator is not None else self.sigmas.device
        return torch.randint(1, self.timesteps + 1, (n,), generator=generator, device=device)
