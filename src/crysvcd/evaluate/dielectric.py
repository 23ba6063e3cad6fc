"""Total dielectric constant of a crystal from an E(3)-equivariant graph network (e3nn).

Data: the Materials Project DFPT set of Petousis et al. (Sci. Data 4, 160134, 2017),
bundled as ``dielectric_constant_with_cif.csv.gz``. The target is log10 of ``poly_total``,
the scalar (orientation-averaged) total dielectric constant, electronic plus ionic. Rows
with a non-finite value or one below 1 (nonphysical) are dropped; the split into train,
val and test is by a SHA-256 hash of ``material_id``, so it never changes.

Model: every atom starts from scalar features of its element (its electron configuration
and electronegativity through a linear map, plus a learned per-element correction that
stays zero for elements absent from training). Edges join atoms closer than ``cutoff``
across periodic images. Each interaction layer forms messages as a tensor product of the
neighbour's features with the spherical harmonics of the edge direction, its weights given
by a radial MLP of a smooth radial basis times a cosine cutoff envelope; messages are
summed with ``index_add_``, mixed with a self-connection and passed through a gated
nonlinearity. The readout takes the invariant (0e) channels only, maps each atom to one
number and averages over the atoms of a crystal, so the prediction does not change under
rotation, translation, permutation of atoms or choice of periodic image.

    python -m crysvcd.evaluate.dielectric train --out runs/dielectric --max-minutes 22
    python -m crysvcd.evaluate.dielectric export runs/dielectric
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Element, Structure
from torch import nn

try:
    from e3nn import o3
    from e3nn.math import soft_one_hot_linspace
    from e3nn.nn import FullyConnectedNet, Gate
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the dielectric model needs e3nn: pip install 'e3nn>=0.5' (torch_scatter not needed)"
    ) from exc

from crysvcd.chem.electrons import configuration
from crysvcd.datasets import data_path, structure_from_cif
from crysvcd.modelio import ema_update, read_checkpoint, save_model
from crysvcd.runinfo import log_epoch, write_run_record

DATA_FILE = "dielectric_constant_with_cif.csv.gz"
CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
MAX_Z = 94  # elements with an electron configuration and a Pauling electronegativity or none
MIN_DISTANCE = 0.1  # A: closer atoms are treated as overlapping, not as a crystal


def shipped_checkpoint() -> Path:
    return CHECKPOINT_DIR / "dielectric_e3nn.pt"


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
    # training
    batch_size: int = 16
    lr: float = 2e-3
    min_lr: float = 5e-5
    weight_decay: float = 1e-5
    ema_decay: float = 0.99
    max_epochs: int = 80
    max_hours: float | None = None  # stop after this much wall time (checkpointed)
    patience: int = 40  # epochs without a better val MAE before stopping
    val_percent: int = 10
    test_percent: int = 10
    seed: int = 0
    properties: list[str] = field(default_factory=list)  # unused; modelio expects it

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- data


def split_of(material_id: str, val_percent: int = 10, test_percent: int = 10) -> str:
    """'train', 'val' or 'test' from a hash of the id: deterministic and order-free."""
    digest = hashlib.sha256(f"dielectric:{material_id}".encode()).digest()
    bucket = int.from_bytes(digest[:4], "big") % 100
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + val_percent:
        return "val"
    return "train"


def load_dielectric_frame(val_percent: int = 10, test_percent: int = 10) -> pd.DataFrame:
    """The bundled table with ``log_eps`` and ``split``; ``attrs['n_dropped']`` counts rows
    removed for a non-finite ``poly_total`` or one below 1."""
    df = pd.read_csv(data_path(DATA_FILE))
    eps = pd.to_numeric(df["poly_total"], errors="coerce")
    keep = np.isfinite(eps) & (eps >= 1.0)
    n_dropped = int((~keep).sum())
    df = df[keep].reset_index(drop=True)
    df["log_eps"] = np.log10(df["poly_total"].astype(float))
    df["split"] = [split_of(m, val_percent, test_percent) for m in df["material_id"]]
    df.attrs["n_dropped"] = n_dropped
    return df


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


@dataclass
class Graph:
    """One crystal as atoms and directed edges (centre <- neighbour) with their vectors."""

    z: np.ndarray  # (n,) atomic numbers
    centre: np.ndarray  # (E,) receiving atom
    neighbour: np.ndarray  # (E,) sending atom
    vec: np.ndarray  # (E, 3) neighbour position (its periodic image) minus centre, A
    y: float = float("nan")  # standardised later; log10 eps when known


def _as_structure(obj) -> Structure:
    if isinstance(obj, Structure):
        return obj
    try:  # ase Atoms, without importing ase unless one is given
        from ase import Atoms
    except ImportError:  # pragma: no cover
        Atoms = None
    if Atoms is not None and isinstance(obj, Atoms):
        if not all(obj.pbc):
            raise ValueError("non-periodic input: ase Atoms with pbc not True on all three axes")
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_structure(obj)
    raise ValueError(
        f"non-periodic input: expected a pymatgen Structure (a crystal), got {type(obj).__name__}"
    )


def structure_graph(structure, cutoff: float) -> Graph:
    """Periodic neighbour graph of a crystal; ValueError names what makes the input unusable."""
    s = _as_structure(structure)
    if len(s) == 0:
        raise ValueError("empty structure: no sites")
    lattice = np.asarray(s.lattice.matrix, dtype=float)
    if not np.all(np.isfinite(lattice)) or abs(np.linalg.det(lattice)) < 1e-6:
        raise ValueError("invalid lattice: non-finite entries or zero volume")
    frac = np.asarray(s.frac_coords, dtype=float)
    bad = np.where(~np.all(np.isfinite(frac), axis=1))[0]
    if len(bad):
        raise ValueError(f"non-finite (NaN or inf) coordinates at site(s) {bad.tolist()}")
    if not s.is_ordered:
        raise ValueError("disordered structure: partial occupancies are not supported")
    z = []
    for i, site in enumerate(s):
        sp = site.specie
        el = getattr(sp, "element", sp)  # Species -> Element
        if not isinstance(el, Element) or not 1 <= el.Z <= MAX_Z:
            raise ValueError(f"unknown element {sp!s} at site {i} (supported: Z = 1..{MAX_Z})")
        z.append(el.Z)
    centre, neighbour, images, dist = s.get_neighbor_list(cutoff)
    if len(dist) and dist.min() < MIN_DISTANCE:
        k = int(np.argmin(dist))
        raise ValueError(
            f"overlapping atoms: sites {centre[k]} and {neighbour[k]} are {dist[k]:.3f} A apart"
        )
    # pymatgen drops pairs at distance ~0 (the atom itself), so also catch exact overlaps
    counts = np.bincount(centre, minlength=len(s))
    isolated = np.where(counts == 0)[0]
    if len(isolated):
        i = int(isolated[0])
        raise ValueError(
            f"isolated atom: site {i} ({s[i].specie}) has no neighbour within "
            f"{cutoff} A ({len(isolated)} such site(s))"
        )
    cart = frac @ lattice
    vec = (frac[neighbour] + images) @ lattice - cart[centre]
    return Graph(
        z=np.asarray(z, dtype=np.int64),
        centre=centre.astype(np.int64),
        neighbour=neighbour.astype(np.int64),
        vec=vec.astype(np.float32),
    )


@dataclass
class GraphBatch:
    z: torch.Tensor
    centre: torch.Tensor
    neighbour: torch.Tensor
    vec: torch.Tensor
    batch: torch.Tensor  # crystal index of every atom
    n_crystals: int
    y: torch.Tensor


def collate(graphs: list[Graph]) -> GraphBatch:
    offsets = np.cumsum([0] + [len(g.z) for g in graphs[:-1]])
    cat = np.concatenate
    return GraphBatch(
        z=torch.from_numpy(cat([g.z for g in graphs])),
        centre=torch.from_numpy(cat([g.centre + o for g, o in zip(graphs, offsets)])),
        neighbour=torch.from_numpy(cat([g.neighbour + o for g, o in zip(graphs, offsets)])),
        vec=torch.from_numpy(cat([g.vec for g in graphs])),
        batch=torch.from_numpy(cat([np.full(len(g.z), i) for i, g in enumerate(graphs)])),
        n_crystals=len(graphs),
        y=torch.tensor([g.y for g in graphs], dtype=torch.float32),
    )


def graphs_from_frame(df: pd.DataFrame, cutoff: float) -> list[Graph]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cif, y in zip(df["cif"], df["log_eps"]):
            g = structure_graph(structure_from_cif(cif), cutoff)
            g.y = float(y)
            out.append(g)
    return out


# ----------------------------------------------------------------------------- model


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
        agg = torch.zeros(len(h), msg.shape[1], dtype=msg.dtype).index_add_(0, centre, msg)
        out = self.gate(self.post(agg * self.norm) + self.skip(h))
        return out + h if self.residual else out


class DielectricNet(nn.Module):
    """Invariant scalar per crystal: standardised log10(total dielectric constant)."""

    def __init__(self, cfg: DielectricConfig):
        super().__init__()
        self.cfg = cfg
        self.properties: list = []  # modelio.save_model stores these; none here
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
        total = torch.zeros(b.n_crystals, dtype=per_atom.dtype).index_add_(0, b.batch, per_atom)
        count = torch.zeros(b.n_crystals).index_add_(0, b.batch, torch.ones_like(per_atom))
        return total / count

    def log_eps(self, b: GraphBatch) -> torch.Tensor:
        return self(b) * self.cfg.target_std + self.cfg.target_mean

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ----------------------------------------------------------------------------- inference


def load_dielectric_model(checkpoint: str | Path | None = None) -> DielectricNet:
    """The trained network (eval mode) from a checkpoint; the shipped one by default."""
    return _load(str(checkpoint or shipped_checkpoint()))


def _weights(state: dict) -> dict:
    """A state dict without the constants (Wigner 3j blocks) that ``copy.deepcopy`` of an
    e3nn tensor product turns into entries: the model rebuilds them itself."""
    return {k: v for k, v in state.items() if "._tensor_constant" not in k}


@cache
def _load(path: str) -> DielectricNet:
    ckpt, cfg, _ = read_checkpoint(path, DielectricConfig, "dielectric")
    model = DielectricNet(cfg)
    model.load_state_dict(_weights(ckpt["model"]))
    model.elements = list(ckpt.get("elements", []))
    return model.eval().requires_grad_(False)


def _check_elements(g: Graph, model: DielectricNet) -> None:
    if not model.elements:
        return
    seen = set(model.elements)
    missing = sorted({Element.from_Z(int(z)).symbol for z in g.z} - seen)
    if missing:
        raise ValueError(
            f"unknown element(s) {missing}: not in the model's training data "
            "(pass allow_unseen_elements=True to predict from element descriptors anyway)"
        )


@torch.no_grad()
def predict_log_dielectric(
    structures: list,
    checkpoint: str | Path | DielectricNet | None = None,
    errors: str = "raise",
    allow_unseen_elements: bool = False,
    batch_size: int = 64,
) -> np.ndarray:
    """log10 of the total dielectric constant of each structure.

    ``errors='raise'`` raises ValueError for the first unusable structure (non-periodic,
    NaN coordinates, isolated or overlapping atoms, unknown element); ``errors='nan'``
    gives NaN for it instead.
    """
    if errors not in ("raise", "nan"):
        raise ValueError(f"errors must be 'raise' or 'nan', not {errors!r}")
    if not isinstance(structures, (list, tuple)):
        structures = [structures]
    model = checkpoint if isinstance(checkpoint, DielectricNet) else None
    model = model or load_dielectric_model(checkpoint)
    out = np.full(len(structures), np.nan)
    graphs, index = [], []
    for i, s in enumerate(structures):
        try:
            g = structure_graph(s, model.cfg.cutoff)
            if not allow_unseen_elements:
                _check_elements(g, model)
        except ValueError as exc:
            if errors == "raise":
                raise ValueError(f"structure {i}: {exc}") from None
            continue
        graphs.append(g)
        index.append(i)
    for k in range(0, len(graphs), batch_size):
        pred = model.log_eps(collate(graphs[k : k + batch_size]))
        out[index[k : k + batch_size]] = pred.double().numpy()
    return out


def predict_dielectric(
    structures: list,
    checkpoint: str | Path | DielectricNet | None = None,
    errors: str = "raise",
    allow_unseen_elements: bool = False,
) -> np.ndarray:
    """Total (electronic + ionic) dielectric constant, orientation-averaged, per structure.

    Uses the shipped checkpoint unless ``checkpoint`` (a path or a loaded model) is given.
    See ``predict_log_dielectric`` for ``errors`` and ``allow_unseen_elements``.
    """
    return 10.0 ** predict_log_dielectric(structures, checkpoint, errors, allow_unseen_elements)


def dielectric_labels(
    structure: Structure,
    checkpoint: str | Path | None = None,
    allow_unseen_elements: bool = False,
) -> dict:
    """Labels for ``crysvcd evaluate``: ``dielectric_total`` (and its log10), or
    ``dielectric_error`` with the reason when the structure is unusable."""
    try:
        log_eps = predict_log_dielectric(
            [structure], checkpoint, allow_unseen_elements=allow_unseen_elements
        )[0]
    except ValueError as exc:
        return {"dielectric_error": str(exc).removeprefix("structure 0: ")}
    return {"dielectric_total": float(10.0**log_eps), "dielectric_log10": float(log_eps)}


# ----------------------------------------------------------------------------- training


def _lr(epoch_frac: float, seconds: float, cfg: DielectricConfig) -> float:
    """Linear warm-up over the first epoch, then cosine to ``min_lr`` over the budget
    (epochs or hours, whichever ends first)."""
    if epoch_frac < 1.0:
        return cfg.lr * max(epoch_frac, 0.05)
    frac = epoch_frac / max(1, cfg.max_epochs)
    if cfg.max_hours:
        frac = max(frac, seconds / (cfg.max_hours * 3600))
    frac = min(1.0, frac)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def evaluate_graphs(model: DielectricNet, graphs: list[Graph], batch_size: int = 64) -> dict:
    """MAE of log10 eps and of eps on graphs with known targets."""
    model.eval()
    pred = torch.cat(
        [
            model.log_eps(collate(graphs[i : i + batch_size]))
            for i in range(0, len(graphs), batch_size)
        ]
    ).double()
    true = torch.tensor([g.y for g in graphs], dtype=torch.float64)
    return {
        "mae_log": (pred - true).abs().mean().item(),
        "mae_eps": (10**pred - 10**true).abs().mean().item(),
    }


def train_dielectric(
    cfg: DielectricConfig,
    out_dir: str | Path,
    data: pd.DataFrame | None = None,
    log=print,
) -> dict:
    """Train with EMA weights; best EMA on val MAE(log10 eps) goes to ``best.pt``, every
    epoch to ``last.pt`` (resumed when present). ``data``: a frame like
    ``load_dielectric_frame()`` (columns ``cif``, ``log_eps``, ``split``); the bundled set
    by default. The test split is never looked at here."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    df = load_dielectric_frame(cfg.val_percent, cfg.test_percent) if data is None else data
    train_set = graphs_from_frame(df[df["split"] == "train"], cfg.cutoff)
    val_set = graphs_from_frame(df[df["split"] == "val"], cfg.cutoff) or train_set[:32]
    if not train_set:
        raise ValueError("no training structures")
    y = np.array([g.y for g in train_set])
    degree = np.mean([len(g.centre) / len(g.z) for g in train_set])
    cfg = replace(
        cfg,
        avg_neighbors=round(float(degree), 3),
        target_mean=round(float(y.mean()), 5),
        target_std=round(float(y.std()) or 1.0, 5),
    )
    elements = sorted({Element.from_Z(int(z)).symbol for g in train_set for z in g.z})
    log(f"train {len(train_set)}, val {len(val_set)}, {len(elements)} elements")

    model = DielectricNet(cfg)
    model.elements = elements
    ema = DielectricNet(cfg).requires_grad_(False)  # not deepcopy: see _weights
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "step": 0, "seconds": 0.0, "best_val": float("inf"), "best_epoch": 0}
    state["history"] = []
    last = out_dir / "last.pt"
    if last.exists():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(_weights(ckpt["model"]))
        ema.load_state_dict(_weights(ckpt["ema"]))
        opt.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        log(f"resumed from {last} at epoch {state['epoch']}")
    write_run_record(
        out_dir,
        cfg.to_dict(),
        cfg.seed,
        data=DATA_FILE if data is None else "frame",
        n_dropped=int(df.attrs.get("n_dropped", 0)),
        n_params=model.n_params(),
        n_train=len(train_set),
        n_val=len(val_set),
        elements=elements,
    )

    def save(path, net, **extra):
        save_model(path, net, elements=elements, **extra)

    gen = torch.Generator().manual_seed(cfg.seed + state["epoch"])
    n_batches = math.ceil(len(train_set) / cfg.batch_size)
    while state["epoch"] < cfg.max_epochs:
        if cfg.max_hours is not None and state["seconds"] >= cfg.max_hours * 3600:
            log(f"stopping: {cfg.max_hours} h of training reached")
            break
        if state["epoch"] - state["best_epoch"] >= cfg.patience:
            log(f"stopping: no better val MAE for {cfg.patience} epochs")
            break
        model.train()
        t0 = time.time()
        order = torch.randperm(len(train_set), generator=gen).tolist()
        total = 0.0
        for k in range(n_batches):
            b = collate(
                [train_set[i] for i in order[k * cfg.batch_size : (k + 1) * cfg.batch_size]]
            )
            for group in opt.param_groups:
                group["lr"] = _lr(
                    state["epoch"] + k / n_batches, state["seconds"] + time.time() - t0, cfg
                )
            target = (b.y - cfg.target_mean) / cfg.target_std
            loss = (model(b) - target).abs().mean()  # L1: the reported MAE, in std units
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            decay = min(cfg.ema_decay, (1 + state["step"]) / (10 + state["step"]))
            ema_update(ema, model, decay)
            state["step"] += 1
            total += loss.item()
        state["epoch"] += 1
        state["seconds"] += time.time() - t0
        val = evaluate_graphs(ema, val_set)
        rec = {
            "epoch": state["epoch"],
            "minutes": round(state["seconds"] / 60, 2),
            "lr": opt.param_groups[0]["lr"],
            "train_l1_std": total / n_batches,
            "val_mae_log": val["mae_log"],
            "val_mae_eps": val["mae_eps"],
        }
        if val["mae_log"] < state["best_val"]:
            state["best_val"], state["best_epoch"] = val["mae_log"], state["epoch"]
            save(out_dir / "best.pt", ema, state=dict(state))
        state["history"].append(rec)
        save(last, model, ema=ema.state_dict(), optimizer=opt.state_dict(), state=state)
        log_epoch(out_dir, rec, log)
    return {
        "epochs": state["epoch"],
        "minutes": state["seconds"] / 60,
        "best_epoch": state["best_epoch"],
        "best_val_mae_log": state["best_val"],
        "history": state["history"],
    }


def export_dielectric(run_dir: str | Path, dest: str | Path | None = None, **figures) -> Path:
    """Copy ``run_dir/best.pt`` (EMA weights only) to ``dest`` (the shipped path by default)
    with a JSON sidecar: config, split, the full training history, the run record."""
    run_dir = Path(run_dir)
    dest = Path(dest or shipped_checkpoint())
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=False)
    keep = ("config", "properties", "model", "elements")
    best["model"] = _weights(best["model"])
    torch.save({k: best[k] for k in keep if k in best}, dest)
    last = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
    run = run_dir / "run.json"
    cfg = best["config"]
    sidecar = {
        "model": "e3nn equivariant message passing, target log10(poly_total)",
        "data": f"{DATA_FILE} (Petousis et al. 2017, CC-BY 4.0)",
        "split": {
            "method": "sha256('dielectric:' + material_id) % 100: "
            f"< {cfg['test_percent']} test, < {cfg['test_percent'] + cfg['val_percent']} val, "
            "else train",
            **{k: v for k, v in json.loads(run.read_text()).items() if k.startswith("n_")},
        }
        if run.exists()
        else None,
        "config": cfg,
        "elements": best.get("elements", []),
        "source": str(run_dir / "best.pt"),
        "best_epoch": best["state"]["best_epoch"],
        "best_val_mae_log": best["state"]["best_val"],
        "epochs_trained": last["state"]["epoch"],
        "minutes_trained": round(last["state"]["seconds"] / 60, 2),
        "history": last["state"]["history"],
        "run": json.loads(run.read_text()) if run.exists() else None,
        **figures,
    }
    dest.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, default=str))
    _load.cache_clear()
    return dest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m crysvcd.evaluate.dielectric")
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train on the bundled data (resumes from OUT/last.pt)")
    tr.add_argument("--out", default="runs/dielectric")
    tr.add_argument("--epochs", type=int, default=DielectricConfig.max_epochs)
    tr.add_argument("--max-minutes", type=float, default=None)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=1)
    ex = sub.add_parser("export", help="copy RUN/best.pt to the shipped checkpoint path")
    ex.add_argument("run_dir")
    ex.add_argument("--dest", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "train":
        torch.set_num_threads(args.threads)
        hours = args.max_minutes / 60 if args.max_minutes else None
        cfg = DielectricConfig(max_epochs=args.epochs, max_hours=hours, seed=args.seed)
        res = train_dielectric(cfg, args.out)
        print(
            f"done: {res['epochs']} epochs, {res['minutes']:.1f} min, best val MAE(log10 eps) "
            f"{res['best_val_mae_log']:.4f} at epoch {res['best_epoch']}"
        )
    else:
        print(export_dielectric(args.run_dir, args.dest))


if __name__ == "__main__":
    main()
