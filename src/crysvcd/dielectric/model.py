"""The dielectric surrogate's network: an E(3)-equivariant graph network (e3nn) that maps a
crystal to log10 of its total dielectric constant.

Every atom starts from scalar features of its element (its electron configuration and
electronegativity through a linear map, plus a learned per-element correction that stays
zero for elements absent from training). Edges join atoms closer than ``cutoff`` across
periodic images. Each interaction layer forms messages as a tensor product of the
neighbour's features with the spherical harmonics of the edge direction, its weights given
by a radial MLP of a smooth radial basis times a cosine cutoff envelope; messages are
summed with ``index_add_``, mixed with a self-connection and passed through a gated
nonlinearity. The readout takes the invariant (0e) channels only, maps each atom to one
number and averages over the atoms of a crystal, so the prediction does not change under
rotation, translation, permutation of atoms or choice of periodic image.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Element
from torch import nn

try:
    from e3nn import o3
    from e3nn.math import soft_one_hot_linspace
    from e3nn.nn import FullyConnectedNet, Gate
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the dielectric model needs e3nn: pip install 'e3nn>=0.5' (torch_scatter not needed)"
    ) from exc

from crysvcd import checkpoints
from crysvcd.chem import MAX_Z
from crysvcd.chem.electrons import configuration
from crysvcd.dielectric.data import GraphBatch


@dataclass
class DielectricConfig:
    """Equivariant network for log10(total dielectric constant) and its training loop."""

    cutoff: float = 5.0  # A, neighbour radius
    n_basis: int = 10  # radial basis functions on [0, cutoff]
    sh_lmax: int = 2  # spherical harmonics of edge directions
    hidden_irreps: str = "64x0e + 16x1o + 16x1e + 8x2e"
    n_layers: int = 3
    radial_hidden: int = 32
    readout_hidden: int = 32
    element_embedding: bool = True  # learned per-element correction on top of descriptors
    # set from the training split by train_dielectric (stored with the weights)
    avg_neighbors: float = 25.0
    target_mean: float = 1.0
    target_std: float = 0.3
    # the fixed split of the bundled table (data.split_of)
    val_percent: int = 10
    test_percent: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


@cache
def element_table() -> torch.Tensor:
    """(MAX_Z + 1, D) descriptors: neutral electron configuration (charge column dropped)
    and Pauling electronegativity / 4 with a flag for elements that have none."""
    rows = [np.zeros(26, dtype=np.float32)]
    for z in range(1, MAX_Z + 1):
        el = Element.from_Z(z)
        vec = np.delete(configuration(el.symbol, 0).vector(), 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # noble gases: "no Pauling electronegativity"
            x = float(el.X)
        extra = [x / 4.0, 0.0] if np.isfinite(x) else [0.0, 1.0]
        rows.append(np.concatenate([vec, np.asarray(extra, dtype=np.float32)]))
    return torch.tensor(np.stack(rows))


class Interaction(nn.Module):
    """Equivariant convolution: TP(neighbour features, Y(edge)) weighted by R(|r|), summed
    over neighbours, plus a self-connection, then a gate."""

    def __init__(self, irreps_in, irreps_sh, irreps_out, cfg: DielectricConfig):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        irreps_out = o3.Irreps(irreps_out)
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0])
        gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
        self.gate = Gate(scalars, [nn.functional.silu], gates, [torch.sigmoid], gated)
        self.irreps_out = self.gate.irreps_out
        wanted = {ir for _, ir in self.gate.irreps_in}
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(o3.Irreps(irreps_sh)):
                for ir in ir_in * ir_sh:
                    if ir in wanted:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir))
        self.tp = o3.TensorProduct(
            self.irreps_in,
            irreps_sh,
            o3.Irreps(mid),
            instructions,
            internal_weights=False,
            shared_weights=False,
        )
        self.radial = FullyConnectedNet(
            [cfg.n_basis, cfg.radial_hidden, self.tp.weight_numel], nn.functional.silu
        )
        self.pre = o3.Linear(self.irreps_in, self.irreps_in)
        self.post = o3.Linear(self.tp.irreps_out, self.gate.irreps_in)
        self.skip = o3.Linear(self.irreps_in, self.gate.irreps_in)
        self.norm = 1.0 / math.sqrt(cfg.avg_neighbors)
        self.residual = self.irreps_in == self.irreps_out

    def forward(self, h, sh, radial_basis, envelope, centre, neighbour):
        weight = self.radial(radial_basis) * envelope[:, None]
        msg = self.tp(self.pre(h)[neighbour], sh, weight)
        agg = msg.new_zeros(len(h), msg.shape[1]).index_add_(0, centre, msg)
        out = self.gate(self.post(agg * self.norm) + self.skip(h))
        return out + h if self.residual else out


class DielectricNet(nn.Module):
    """Invariant scalar per crystal: standardised log10(total dielectric constant)."""

    def __init__(self, cfg: DielectricConfig):
        super().__init__()
        self.cfg = cfg
        self.properties: list = []  # a property-free model, as checkpoints.save expects
        self.elements: list[str] = []  # elements seen in training, set by train/load
        hidden = o3.Irreps(cfg.hidden_irreps).simplify()
        n_scalar = sum(m for m, ir in hidden if ir == o3.Irrep("0e"))
        if n_scalar == 0:
            raise ValueError("hidden_irreps needs 0e channels for the invariant readout")
        self.register_buffer("descriptors", element_table(), persistent=False)
        self.embed = nn.Linear(self.descriptors.shape[1], n_scalar)
        self.element_emb = nn.Embedding(MAX_Z + 1, n_scalar) if cfg.element_embedding else None
        if self.element_emb is not None:
            nn.init.zeros_(self.element_emb.weight)
        self.irreps_sh = o3.Irreps.spherical_harmonics(cfg.sh_lmax)
        layers, irreps = [], o3.Irreps(f"{n_scalar}x0e")
        for _ in range(cfg.n_layers):
            layer = Interaction(irreps, self.irreps_sh, hidden, cfg)
            layers.append(layer)
            irreps = layer.irreps_out
        self.layers = nn.ModuleList(layers)
        self.to_scalars = o3.Linear(irreps, f"{n_scalar}x0e")
        self.readout = nn.Sequential(
            nn.Linear(n_scalar, cfg.readout_hidden), nn.SiLU(), nn.Linear(cfg.readout_hidden, 1)
        )

    def forward(self, b: GraphBatch) -> torch.Tensor:
        cfg = self.cfg
        h = self.embed(self.descriptors[b.z])
        if self.element_emb is not None:
            h = h + self.element_emb(b.z)
        length = b.vec.norm(dim=1)
        sh = o3.spherical_harmonics(
            self.irreps_sh, b.vec, normalize=True, normalization="component"
        )
        basis = soft_one_hot_linspace(
            length, 0.0, cfg.cutoff, cfg.n_basis, basis="gaussian", cutoff=True
        ) * math.sqrt(cfg.n_basis)
        envelope = 0.5 * (torch.cos(math.pi * length / cfg.cutoff) + 1.0)
        envelope = envelope * (length < cfg.cutoff)
        for layer in self.layers:
            h = layer(h, sh, basis, envelope, b.centre, b.neighbour)
        per_atom = self.readout(self.to_scalars(h)).squeeze(-1)
        total = per_atom.new_zeros(b.n_crystals).index_add_(0, b.batch, per_atom)
        count = per_atom.new_zeros(b.n_crystals).index_add_(0, b.batch, torch.ones_like(per_atom))
        return total / count

    def log_eps(self, b: GraphBatch) -> torch.Tensor:
        return self(b) * self.cfg.target_std + self.cfg.target_mean

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def load_model(path: str | Path | None = None) -> DielectricNet:
    """The trained network (eval mode, no gradients); the shipped one by default. Loaded
    once per path and process."""
    path = Path(path) if path else checkpoints.shipped("dielectric")
    return _load(str(path.resolve()))


@cache
def _load(path: str) -> DielectricNet:
    ckpt, cfg, _ = checkpoints.read(path, DielectricConfig, "dielectric")
    model = DielectricNet(cfg)
    checkpoints.load_weights(model, ckpt["model"])
    model.elements = list(ckpt.get("elements", []))
    return model.eval().requires_grad_(False)
