"""The learning loop's settings: one flat dataclass, settable from a TOML file and flags.

    # campaign.toml
    rounds = 3
    n = 100
    ehull_threshold = 0.0
    mlip = "sevennet"
    workers = 2
    kappa_fc3_cutoff = "none"   # an optional setting: "none" sets it to None

``crysvcd loop --config campaign.toml --out RUN`` reads it; flags override the file; the
values in force are written to ``RUN/loop.json``, and a resumed run must use the same.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from crysvcd.config import check_precision
from crysvcd.evaluate.settings import BACKENDS, EvaluateConfig, KappaSettings

TARGETS = ("stability", "kappa", "dielectric")
RECIPES = ("labels", "paper")
# what a run made before a setting existed did, in that setting's terms (resume compares them)
BEFORE = {
    "screen_factor": 1,
    "kappa_supercell": 9.0,
    "kappa_fc3_cutoff": None,
    "kappa_wigner": False,
}
# how the labels are computed, not what they are: a resumed run may change these
HOW = ("workers", "scheduler", "label_device", "relax_batch")


@dataclass
class LoopConfig:
    rounds: int = 3  # generate-label rounds; the models are fine-tuned between rounds
    n: int = 100  # crystals generated per round
    seed: int = 0
    # what the campaign steers towards (loop.targets): "stability", or a property with its
    # direction ("kappa": high or low) or threshold ("dielectric": epsilon >= target_value)
    target: str = "stability"
    direction: str = "high"
    target_value: float | None = None  # kappa: W/mK (None: the 90th/10th percentile)
    # fine-tune both stages on the target's bundled labels before round 0, which is then
    # conditioned too (false: round 0 is the shipped models, unconditioned)
    prime: bool = False
    # what the priming fine-tune learns the target from: "labels", the bundled property
    # labels; "paper" (kappa high only), the paper's expert-screened subset of the pool,
    # every member a hit (loop.targets.paper_kappa_subset). All hits leave no property
    # screen to fit, so that recipe runs without one, as the paper does
    recipe: str = "labels"
    # A crystal is labelled stable when its relaxation converged and its MLIP energy above
    # the MP hull is below this (eV/atom); the paper fine-tunes with 0 and -0.05.
    ehull_threshold: float = 0.0
    # generation
    valence_masks: bool = True  # False: the unconstrained baseline (no fine-tuning then)
    ionic_fraction: float = 0.7
    diffusion_steps: int = 100
    candidates: int = 1
    guidance: float = 2.0  # classifier-free guidance w of the conditioned Stage II
    stage1_ionic: str | None = None  # starting checkpoints (default: shipped)
    stage1_alloy: str | None = None
    stage2: str | None = None
    # NAME=VALUE that the starting checkpoints were fine-tuned on (a stability campaign's
    # "stable=1"): the rounds before the loop has tuned the models for its own target are
    # generated conditioned on it, so a property campaign can start from the models of a
    # stability campaign and keep their pull toward stable crystals
    start_condition: str | None = None
    device: str = "cpu"  # Stage II sampling
    # > 1: Stage I draws this many times n formulas and a screen fitted on the labels so far
    # (evaluate.screen) keeps the n it rates best; 1: no screen. Stability: from round 1 on;
    # a property target: from round 0 on, fitted on its bundled labels and the campaign's.
    # The screen is what raised the stable share here, the fine-tunes alone did not (README)
    screen_factor: int = 5
    novel_formulas: bool = False  # every round: only formulas that are not MP entries
    # a property screen keeps only formulas whose label would count (dielectric: elements
    # the surrogate knows, not likely metals; GenerateConfig.screen_label): 28 of the 100
    # formulas a dielectric screen kept from 500 draws were one or the other
    # (benchmarks/dielectric_screen.py)
    screen_usable: bool = False
    # labels (crysvcd evaluate's settings)
    mlip: str = "sevennet"
    fmax: float = 0.01
    relax_steps: int = 500
    timeout: float = 900.0
    phonons: bool = True
    phonon_ehull_max: float = 0.1  # phonons only for crystals below this Ehull
    phonon_share: float = 1.0  # and of those, this share (a fixed hash of the key decides)
    phonon_supercell: float = 20.0
    phonon_max_atoms: int = 2000
    # kappa: phono3py for at most this many crystals per round, the best by the harmonic
    # screen (Slack's estimate from the phonons), each within kappa_budget seconds
    kappa_per_round: int = 5
    kappa_budget: float = 600.0
    # phono3py's fc3 supercell width and pair cutoff (A): the settings benchmarks/kappa.py
    # validated against 10 phononDB references (README, kappa). Without the cutoff,
    # generated low-symmetry cells need hundreds of supercells and most exceed the budget
    kappa_supercell: float = KappaSettings.supercell_min_length
    kappa_fc3_cutoff: float | None = KappaSettings.fc3_cutoff
    # the Wigner total (particle + coherence, Simoncelli-Marzari-Mauri), as benchmarks/kappa.py
    # was checked: the particle (RTA) part alone falls far below the glass limit for the
    # soft, complex cells a low-kappa campaign makes (0.019 W/mK for a Rb2PdBr6)
    kappa_wigner: bool = KappaSettings.wigner
    # kappa campaigns: phonons (minutes per crystal here) only for the crystals whose
    # composition surrogate (evaluate.kappa_surrogate) puts them in this best share of its
    # training formulas, toward the target; 1: every stable crystal
    kappa_prescreen: float = 1.0
    kappa_mlip: str | None = "sevennet-l3i5"  # None: the relaxation's MLIP
    kappa_fc3_mlip: str | None = None  # fc3 alone from this MLIP; None: kappa_mlip's
    label_device: str = "cpu"  # where the MLIP runs: cpu, cuda, auto
    # > 1: relax this many at once with torch-sim (SevenNet models); None: EvaluateConfig's
    # choice (a group of 32 for SevenNet models on a GPU, else 1)
    relax_batch: int | None = None
    workers: int = 1  # Dask worker processes on this machine
    scheduler: str | None = None  # or the address of a running Dask scheduler
    # fine-tuning between rounds
    finetune_stage1: bool = True
    finetune_stage2: bool = True
    stage1_epochs: int = 4
    stage2_epochs: int = 3
    # peak learning rates of the fine-tunes: well below the from-scratch 1e-3, which on a
    # few thousand crystals undid more of Stage II than the labels taught it (README, loop)
    stage1_lr: float = 3e-4
    stage2_lr: float = 1e-4
    stage2_pool_sample: int = 2000  # pool crystals beside the labelled ones (Stage II)
    labelled_weight: int = 10  # copies of every labelled crystal in the fine-tuning data
    train_device: str = "auto"
    # the networks' arithmetic in generation (Stage II) and in the fine-tunes: fp32, tf32
    # (CUDA) or bf16 (autocast; README: several times faster on CPUs with AVX512-BF16)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        # TOML has no null: "none" (a file or a flag) sets an optional setting to None
        for f in fields(self):
            value = getattr(self, f.name)
            if "None" in str(f.type) and isinstance(value, str) and value.lower() == "none":
                setattr(self, f.name, None)
        positive = (
            "rounds", "n", "diffusion_steps", "candidates", "relax_steps", "workers",
            "stage1_epochs", "stage2_epochs", "labelled_weight", "phonon_max_atoms",
            "kappa_per_round", "screen_factor",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown label {self.target!r}: the loop knows {', '.join(TARGETS)}")
        if self.direction not in ("high", "low"):
            raise ValueError(f"direction must be 'high' or 'low', got {self.direction!r}")
        if self.target != "kappa" and self.direction != "high":
            raise ValueError(f"the {self.target} target has no direction {self.direction!r}")
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}: choose from {', '.join(RECIPES)}")
        if self.recipe == "paper" and (self.target, self.direction) != ("kappa", "high"):
            raise ValueError("the paper's recipe is for the kappa high target only")
        if self.target == "dielectric" and self.target_value is None:
            self.target_value = 50.0  # the paper's condition
        if self.target_value is not None and not self.target_value > 0:
            raise ValueError(f"target_value must be > 0, got {self.target_value}")
        if self.screen_usable and self.target != "dielectric":
            raise ValueError(f"screen_usable has composition rules for the dielectric target "
                             f"only, not {self.target!r}")  # fmt: skip
        if self.target == "kappa" and not self.phonons:
            raise ValueError("the kappa target screens with phonons: phonons must be on")
        if self.kappa_mlip is not None and self.kappa_mlip not in BACKENDS:
            raise ValueError(f"unknown kappa MLIP {self.kappa_mlip!r}")
        if self.kappa_fc3_mlip is not None and self.kappa_fc3_mlip not in BACKENDS:
            raise ValueError(f"unknown kappa fc3 MLIP {self.kappa_fc3_mlip!r}")
        if self.target == "kappa" and "chgnet" in (self.kappa_mlip or self.mlip,
                                                   self.kappa_fc3_mlip):  # fmt: skip
            raise ValueError("kappa needs smooth forces: use a SevenNet model, not chgnet")
        if not 0 < self.kappa_prescreen <= 1:
            raise ValueError(f"kappa_prescreen must be in (0, 1], got {self.kappa_prescreen}")
        if not self.kappa_supercell > 0 or not (self.kappa_fc3_cutoff or 1) > 0:
            raise ValueError("kappa_supercell and kappa_fc3_cutoff must be > 0 A")
        if not self.kappa_budget > 0:
            raise ValueError(f"kappa_budget must be > 0 seconds, got {self.kappa_budget}")
        if not -1.0 <= self.ehull_threshold <= 1.0:
            raise ValueError(
                f"ehull_threshold must be in [-1, 1] eV/atom, got {self.ehull_threshold}"
            )
        if not -1.0 <= self.phonon_ehull_max <= 1.0:
            raise ValueError(
                f"phonon_ehull_max must be in [-1, 1] eV/atom, got {self.phonon_ehull_max}"
            )
        if not 0.0 <= self.phonon_share <= 1.0:
            raise ValueError(f"phonon_share must be in [0, 1], got {self.phonon_share}")
        if not 0.0 <= self.ionic_fraction <= 1.0:
            raise ValueError(f"ionic_fraction must be in [0, 1], got {self.ionic_fraction}")
        if self.mlip not in BACKENDS:
            raise ValueError(f"unknown MLIP {self.mlip!r}; choose from {', '.join(BACKENDS)}")
        if not self.fmax > 0 or not self.timeout > 0 or self.guidance < 0:
            raise ValueError("fmax and timeout must be > 0 and guidance >= 0")
        if not (0 < self.stage1_lr < 1 and 0 < self.stage2_lr < 1):
            raise ValueError("stage1_lr and stage2_lr must be in (0, 1)")
        check_precision(self.precision)
        if self.stage2_pool_sample < 0:
            raise ValueError(f"stage2_pool_sample must be >= 0, got {self.stage2_pool_sample}")
        if self.prime and self.target == "stability":
            raise ValueError("prime needs a property target (kappa or dielectric)")
        if self.start_condition is not None:
            from crysvcd.conditioning import split_condition

            try:
                split_condition(self.start_condition)
            except ValueError as exc:
                raise ValueError(f"start_condition: {exc}") from None
            if not (self.stage1_ionic or self.stage1_alloy or self.stage2):
                raise ValueError(
                    "start_condition needs starting checkpoints fine-tuned on it "
                    "(stage1_ionic, stage1_alloy or stage2); the shipped models are unconditioned"
                )
        if not self.valence_masks and self.rounds > 1:
            raise ValueError("the unconstrained baseline (valence_masks = false) runs one round")
        # the labelling settings are checked where they are defined, before any work
        try:
            EvaluateConfig(mlip=self.mlip, device=self.label_device, relax_batch=self.relax_batch)
        except ValueError as exc:
            raise ValueError(f"labels: {exc} (label_device, relax_batch)") from None

    def target_spec(self):
        from crysvcd.loop.targets import Target

        return Target(self.target, self.direction, self.target_value, self.recipe)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def load(
        cls, path: str | Path | None = None, defaults: dict | None = None, **overrides
    ) -> LoopConfig:
        """``defaults``, then a TOML (or JSON) file over them, then ``overrides`` (None
        values ignored)."""
        values: dict = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"no config file {path}")
            text = path.read_text()
            try:
                values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
            except (ValueError, tomllib.TOMLDecodeError) as exc:
                kind = path.suffix.lstrip(".") or "TOML"
                raise ValueError(f"{path}: not valid {kind} ({exc})") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown loop setting(s) {unknown} in {path}")
        values = {**(defaults or {}), **values}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
