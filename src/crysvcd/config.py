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
