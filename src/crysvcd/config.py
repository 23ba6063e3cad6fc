"""Configuration dataclasses of each stage (no dicts of strings)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Stage1Config:
    """Composition language model and its training loop."""

    kind: str = "ionic"  # "ionic" or "alloy": separate models, as in the paper
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.1
    max_tokens: int = 8  # species tokens per formula, START/END excluded (pool max: 6)
    max_atoms: int = 20  # atoms per cell
    max_count: int = 20
    # training
    batch_size: int = 256
    lr: float = 1e-3
    min_lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    max_epochs: int = 40
    patience: int = 6  # epochs without dev improvement before stopping
    permutations: int = 3  # extra random orders of each formula's tokens
    label_dropout: float = 0.1  # share of labelled rows trained unconditionally
    seed: int = 0
    properties: list[str] = field(default_factory=list)  # "NAME=COLUMN" or "NAME=COLUMN>THRESH"

    def __post_init__(self) -> None:
        if self.kind not in ("ionic", "alloy"):
            raise ValueError(f"kind must be 'ionic' or 'alloy', not {self.kind!r}")
        if self.n_embd % self.n_head:
            raise ValueError("n_embd must be a multiple of n_head")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Stage2Config:
    """Crystal-structure diffusion (DiffCSP-style CSP) and its training loop."""

    hidden: int = 256
    n_layers: int = 4
    n_freq: int = 128  # Fourier features of fractional differences: sin/cos of 2*pi*k*df
    time_dim: int = 128
    timesteps: int = 1000
    sigma_begin: float = 0.005
    sigma_end: float = 0.5
    max_atoms: int = 20
    cond_drop: float = 0.2  # share of rows trained without their property labels
    guidance: float = 2.0  # w in w*cond + (1-w)*uncond
    # training
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    max_epochs: int = 1000
    max_hours: float | None = None  # stop after this much wall time (checkpointed)
    eval_every: int = 5  # epochs between dev-loss evaluations and best checkpoints
    cost_coord: float = 1.0
    cost_lattice: float = 1.0
    seed: int = 0
    properties: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)
