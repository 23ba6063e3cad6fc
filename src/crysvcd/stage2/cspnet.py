"""CSPNet: the periodic-E(3)-invariant denoiser of DiffCSP (Jiao et al., NeurIPS 2023).

Edges join every pair of atoms in a crystal. An edge message sees both atoms' features, the
lattice Gram matrix L L^T (invariant to rotations) and a Fourier encoding of the fractional
difference f_j - f_i (invariant to a common shift of all fractional coordinates and to
periodic images). Messages are averaged with ``index_add_``. Outputs: the score of the
fractional coordinates per atom (invariant, as fractional coordinates do not rotate) and the
lattice noise as M(h) @ L, which rotates with the lattice.

Speed: the first linear map of every edge MLP is split into per-node parts (computed once
per atom, then gathered onto edges), a per-crystal lattice part and an edge part. This is
the same function as a linear map of the concatenated edge input, at a fraction of the cost.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from crysvcd import checkpoints
from crysvcd.conditioning import PropertyAdapter, PropertySpec
from crysvcd.config import Stage2Config
from crysvcd.stage2.batch import CrystalBatch

# Rows of the atom embedding (part of the checkpoint layout); the elements a composition
# may hold are chem.MAX_Z and below.
Z_TABLE = 100
GRAM_SCALE = 0.01  # L L^T is in A^2 (tens to hundreds): bring it near unit size


def sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(10000.0) * k / (half - 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], -1)


def fourier_frac(diff: torch.Tensor, n_freq: int) -> torch.Tensor:
    """sin/cos of 2*pi*k*diff, k = 0..n_freq-1, per axis: periodic in each coordinate."""
    k = torch.arange(n_freq, dtype=diff.dtype, device=diff.device)
    args = 2 * math.pi * diff.unsqueeze(-1) * k  # (E, 3, n_freq)
    return torch.cat([args.sin(), args.cos()], -1).flatten(1)


class CSPLayer(nn.Module):
    def __init__(self, hidden: int, n_freq: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.edge_src = nn.Linear(hidden, hidden)
        self.edge_dst = nn.Linear(hidden, hidden, bias=False)
        self.edge_lattice = nn.Linear(9, hidden, bias=False)
        self.edge_frac = nn.Linear(6 * n_freq, hidden, bias=False)
        self.edge_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.node_mlp = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )

    def forward(self, h, frac_feat, gram, edges, batch, inv_degree):
        x = self.norm(h)
        src, dst = edges
        msg = self.edge_src(x)[src] + self.edge_dst(x)[dst]
        msg = msg + self.edge_lattice(gram)[batch[src]] + self.edge_frac(frac_feat)
        msg = self.edge_out(msg)
        agg = torch.zeros_like(x).index_add_(0, src, msg) * inv_degree[:, None]
        return h + self.node_mlp(torch.cat([x, agg], -1))


class CSPNet(nn.Module):
    def __init__(self, cfg: Stage2Config, properties: list[PropertySpec] | None = None):
        super().__init__()
        self.cfg = cfg
        self.properties = list(properties or [])
        h = cfg.hidden
        self.atom_emb = nn.Embedding(Z_TABLE + 1, h)
        self.input = nn.Linear(h + cfg.time_dim, h)
        self.adapter = PropertyAdapter(self.properties, h) if self.properties else None
        self.layers = nn.ModuleList(CSPLayer(h, cfg.n_freq) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(h)
        self.coord_out = nn.Linear(h, 3, bias=False)
        self.lattice_out = nn.Linear(h, 9, bias=False)

    def forward(
        self,
        t: torch.Tensor,
        frac: torch.Tensor,
        lattice: torch.Tensor,
        batch: CrystalBatch,
        props: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """t: (B,), frac: (N, 3), lattice: (B, 3, 3). Returns (lattice eps (B,3,3), score (N,3))."""
        idx = batch.batch
        h = self.atom_emb(batch.atom_types)
        h = self.input(torch.cat([h, sinusoidal(t, self.cfg.time_dim)[idx]], -1))
        if self.adapter is not None and props is not None:
            h = h + self.adapter(props)[idx]
        src, dst = batch.edges
        frac_feat = fourier_frac(frac[dst] - frac[src], self.cfg.n_freq)
        gram = (lattice @ lattice.transpose(1, 2)).flatten(1) * GRAM_SCALE
        degree = torch.zeros(len(h), device=h.device).index_add_(
            0, src, torch.ones(len(src), device=h.device)
        )
        inv_degree = 1.0 / degree.clamp(min=1.0)
        for layer in self.layers:
            h = layer(h, frac_feat, gram, batch.edges, idx, inv_degree)
        h = self.final_norm(h)
        score = self.coord_out(h)
        pooled = h.new_zeros(batch.n_crystals, h.shape[1]).index_add_(0, idx, h)
        pooled = pooled / batch.num_atoms[:, None].float()
        eps_lattice = self.lattice_out(pooled).view(-1, 3, 3) @ lattice
        return eps_lattice, score

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def load_model(path: str | Path | None = None) -> CSPNet:
    """A trained CSPNet in eval mode (the EMA weights when the file holds both); the
    shipped one by default."""
    path = Path(path) if path else checkpoints.shipped("stage2")
    ckpt, cfg, specs = checkpoints.read(path, Stage2Config, "Stage II")
    model = CSPNet(cfg, specs)
    checkpoints.load_weights(model, ckpt.get("ema", ckpt["model"]))
    return model.eval()
