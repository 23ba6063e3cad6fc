"""Configuration dataclasses (no dicts of strings), importable without torch so that the
command line shows their defaults at once.

A model config holds what defines the model and its loss; how it is trained (batch size,
learning rate, budget, device) is a ``FitConfig``, whose per-model defaults (``FIT``) live
beside each model's ``train()``. Checkpoints store the model config only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Stage1Config:
    """Composition language model."""

    kind: str = "ionic"  # "ionic" or "alloy": separate models, as in the paper
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.1
    max_tokens: int = 8  # species tokens per formula, START/END excluded (pool max: 6)
    max_atoms: int = 20  # atoms per cell
    max_count: int = 20
    permutations: int = 3  # extra random orders of each formula's tokens in training
    label_dropout: float = 0.1  # share of labelled rows trained unconditionally
    # free decodings of a trained ionic model from which its neutrality table (the
    # twisted sampler's weights) is estimated: stage1.sample.neutrality_table
    neutrality_rollouts: int = 20000
    properties: list[str] = field(default_factory=list)  # "NAME=COLUMN" or "NAME=COLUMN>THRESH"

    def __post_init__(self) -> None:
        if self.kind not in ("ionic", "alloy"):
            raise ValueError(f"kind must be 'ionic' or 'alloy', not {self.kind!r}")
        if self.n_embd % self.n_head:
            raise ValueError("n_embd must be a multiple of n_head")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        if self.permutations < 0:
            raise ValueError(f"permutations must be >= 0, got {self.permutations}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Stage2Config:
    """Crystal-structure diffusion (DiffCSP-style CSP)."""

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
    cost_coord: float = 1.0
    cost_lattice: float = 1.0
    properties: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 <= self.cond_drop < 1:
            raise ValueError(f"cond_drop must be in [0, 1), got {self.cond_drop}")

    def to_dict(self) -> dict:
        return asdict(self)


# Diffusion steps of `crysvcd generate` (README, "Choosing the default sampler").
DEFAULT_STEPS = 100


PRECISIONS = ("fp32", "tf32", "bf16")


def check_precision(precision: str) -> None:
    """The one check of a ``precision`` setting (training, sampling, generate, loop)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


@dataclass
class GenerateConfig:
    n: int = 20
    ionic_fraction: float = 0.7  # share of Stage I formulas drawn from the ionic model
    formulas: list[str] = field(default_factory=list)  # skip Stage I when given
    samples_per_formula: int = 1
    # >1: draw this many structures per output and keep the lowest single-point MLIP energy
    candidates: int = 1
    rank_mlip: str = "sevennet"
    steps: int = DEFAULT_STEPS
    corrector: bool = True
    seed: int = 0
    formula_temperature: float = 1.0  # Stage I sampling temperature
    conditions: list[str] = field(default_factory=list)  # NAME=VALUE, for models that know NAME
    guidance: float | None = None  # Stage II classifier-free guidance w (None: the model's)
    # False: Stage I decodes without the valence masks and keeps non-neutral formulas (the
    # unconstrained baseline of the paper's Fig. 3b)
    valence_masks: bool = True
    # a stability screen (evaluate.screen, JSON): Stage I draws screen_factor times the
    # formulas needed and the screen keeps the best rated
    screen: str | None = None
    screen_factor: int = 5
    # with a screen, a label the kept formulas must be usable for: "dielectric" drops the
    # drawn formulas the surrogate cannot label (an element it never saw) or whose epsilon
    # a campaign would not count (likely metals, evaluate.gap) before the screen picks, so
    # no structure is spent on them
    screen_label: str | None = None
    # keep only Stage I formulas that are not Materials Project entries (drawn from
    # screen_factor times as many)
    novel_formulas: bool = False
    stage1_ionic: str | None = None  # checkpoints (default: shipped)
    stage1_alloy: str | None = None
    stage2: str | None = None
    device: str = "cpu"  # Stage II sampling: cpu, cuda, auto
    precision: str = "fp32"  # Stage II's network: fp32, tf32 (CUDA) or bf16 (autocast)
    chunk: int = 16  # structures sampled together and written together

    def __post_init__(self) -> None:
        from crysvcd.evaluate.settings import BACKENDS

        ints = {"samples_per_formula": 1, "candidates": 1, "chunk": 1, "steps": 1,
                "screen_factor": 1}  # fmt: skip
        if not self.formulas:
            ints["n"] = 1
        for name, low in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0 <= self.ionic_fraction <= 1:
            raise ValueError(f"ionic_fraction must be in [0, 1], got {self.ionic_fraction}")
        if not self.formula_temperature > 0:
            raise ValueError(f"formula_temperature must be > 0, got {self.formula_temperature}")
        if self.rank_mlip not in BACKENDS:
            raise ValueError(f"unknown MLIP {self.rank_mlip!r}; choose from {', '.join(BACKENDS)}")
        if self.guidance is not None and self.guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {self.guidance}")
        check_precision(self.precision)
        if self.screen_label not in SCREEN_LABELS:
            raise ValueError(
                f"screen_label must be one of {', '.join(map(str, SCREEN_LABELS))}, "
                f"got {self.screen_label!r}"
            )
        if (self.screen is not None or self.novel_formulas) and self.formulas:
            raise ValueError("screen and novel_formulas act on Stage I's formulas: not given ones")


SCREEN_LABELS = (None, "dielectric")  # GenerateConfig.screen_label (evaluate.gap.blockers)


@dataclass
class FitConfig:
    """The training loop's settings. Every model config carries fields of these names;
    ``FitConfig.of(model_cfg)`` picks them up."""

    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_epochs: int = 100
    max_hours: float | None = None  # wall-time budget, summed over resumes (the LR schedule's)
    session_hours: float | None = None  # stop this invocation after this long (resumable)
    patience: int | None = None  # evaluations without a better dev metric before stopping
    ema_decay: float | None = None  # None: no EMA; best.pt then holds the raw weights
    grad_clip: float = 1.0
    eval_every: int = 1  # epochs between dev evaluations
    snapshots: bool = False  # keep the EMA weights of every evaluation
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    precision: str = "fp32"  # fp32; tf32 (CUDA matmuls); bf16 (autocast)

    def __post_init__(self) -> None:
        check_fit_values(self)

    @classmethod
    def of(cls, cfg: Any, **overrides) -> FitConfig:
        """The fit settings held by a model config (fields of the same names)."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in asdict(cfg).items() if k in names}
        return cls(**{**values, **overrides})


def check_fit_values(cfg: Any) -> None:
    """Refuse nonsense before any work (shared by FitConfig and the model configs)."""
    positive = ("batch_size", "max_epochs", "eval_every")
    for name in positive:
        value = getattr(cfg, name, 1)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    lr, min_lr = getattr(cfg, "lr", 1.0), getattr(cfg, "min_lr", 0.0)
    if not (lr > 0 and 0 <= min_lr <= lr):
        raise ValueError(f"need lr > 0 and 0 <= min_lr <= lr, got lr={lr}, min_lr={min_lr}")
    for name in ("max_hours", "session_hours"):
        hours = getattr(cfg, name, None)
        if hours is not None and not hours > 0:
            raise ValueError(f"{name} must be > 0, got {hours}")
    decay = getattr(cfg, "ema_decay", None)
    if decay is not None and not 0 < decay < 1:
        raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
    patience = getattr(cfg, "patience", None)
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive integer or None, got {patience!r}")
    if getattr(cfg, "warmup_steps", 0) < 0 or getattr(cfg, "weight_decay", 0.0) < 0:
        raise ValueError("warmup_steps and weight_decay must be >= 0")
    check_precision(getattr(cfg, "precision", "fp32"))
