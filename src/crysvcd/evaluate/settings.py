"""Settings of the labels (what ``crysvcd evaluate`` computes and how), as plain
dataclasses that import nothing heavy: the command line reads its defaults from here."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

BACKENDS = ("sevennet", "sevennet-l3i5", "sevennet-mf0", "chgnet", "mattersim", "emt")
BATCHED = ("sevennet", "sevennet-l3i5", "sevennet-mf0")  # torch-sim has their model interface
AUTO_RELAX_BATCH = 32  # the default group of the batched path on a GPU
OPTIMIZERS = ("FIRE", "BFGS")
STEPS = ("relax", "phonons", "kappa", "dielectric")


@dataclass
class PhononSettings:
    supercell_min_length: float = 20.0  # Angstrom, smallest perpendicular width
    displacement: float = 0.01  # Angstrom (phonopy's default; 0.01-0.03 is sensible)
    mesh: tuple[int, int, int] = (8, 8, 8)
    threshold: float = 0.01  # THz: larger imaginary frequencies mean unstable
    max_supercell_atoms: int = 2000
    timeout: float | None = None  # seconds for the whole calculation
    symprec: float = 1e-3  # Angstrom, for the idealised cell (None: use the cell as given)

    def __post_init__(self) -> None:
        if not self.supercell_min_length > 0 or not 0 < self.displacement < 0.5:
            raise ValueError("need supercell_min_length > 0 and displacement in (0, 0.5) A")
        if len(self.mesh) != 3 or min(self.mesh) < 1:
            raise ValueError(f"mesh must be three positive integers, got {self.mesh}")
        if self.threshold < 0 or self.max_supercell_atoms < 1:
            raise ValueError("threshold must be >= 0 and max_supercell_atoms >= 1")


@dataclass
class KappaSettings:
    # K; one value or several (kappa is reported at the first one)
    temperatures: float | Sequence[float] = 300.0
    # q-mesh: a length l in A (N_i ~ l |b_i|, phono3py's automatic mesh) or three integers.
    # 60 gives 19x19x19 for Si (the phononDB/kappa-103 choice; converged, slow); the default
    # 30 (about 10x10x10) finishes a 2-atom cell in minutes on a laptop and reads ~10 % low
    # for Si (README, kappa); pass 60 for production figures.
    mesh: float | Sequence[int] = 30.0
    # A: smallest perpendicular width of the fc3 supercell. 8.5 A with pairs within 4.5 A
    # (fc3_cutoff) and the Wigner total are the settings benchmarks/kappa.py checked against
    # 10 phononDB references and Si (README, kappa); 8.5 A gives 64-atom cells for rocksalt
    # and zincblende. The loop and the campaigns use the same defaults
    supercell_min_length: float = 8.5
    # A: a larger fc2 supercell when set (harmonic constants are longer-ranged, and fc2
    # supercells are cheap: a handful of finite displacements)
    fc2_supercell_min_length: float | None = None
    # A: when fc2 from the fc3 supercell gives imaginary modes (a lowest mesh frequency at
    # or below -0.1 THz), fc2 again from a supercell this wide, fc3 kept, and the RTA
    # again, within budget_s. 12 A is the campaigns' phonon screen, which passed the
    # crystals such a kappa belongs to; None: no retry. Soft, low-kappa cells came out
    # unreliable at 8.5 A (Cs2SnTe3: -0.59 THz there, +0.05 THz in the screen)
    fc2_retry_min_length: float | None = 12.0
    fc2_retry_max_atoms: int = 400  # the wider fc2 supercell at most (the screen's limit)
    displacement: float = 0.03  # A
    # above this many finite-difference supercells, switch to random snapshots + symfc
    max_fd_supercells: int = 300
    # random snapshots (total, counting each +/- pair as two) or None for
    # max(8 x symfc's minimum, 48), capped at max_random_snapshots
    n_random_snapshots: int | None = None
    max_random_snapshots: int = 200
    # A: drop fc3 pairs farther apart (both routes); None keeps all pairs in the supercell,
    # which for a low-symmetry generated cell means hundreds of supercells
    fc3_cutoff: float | None = 4.5
    max_supercell_atoms: int = 200
    budget_s: float | None = 600.0  # wall time per material, None for no limit
    isotope: bool = True
    # the Wigner total (particle + coherence): the particle part alone falls below the glass
    # limit for soft complex cells (0.019 against 0.111 W/mK for a Rb2PdBr6; README)
    wigner: bool = True
    symprec: float = 1e-4  # A, for the symmetry search of the (relaxed) input cell
    random_seed: int = 0

    def __post_init__(self) -> None:
        self.temperature_list()
        mesh = [self.mesh] if isinstance(self.mesh, int | float) else list(self.mesh)
        if len(mesh) not in (1, 3) or not all(m > 0 for m in mesh):
            raise ValueError(
                f"mesh must be a length > 0 (A) or three positive integers, got {self.mesh}"
            )
        if not self.supercell_min_length > 0 or not 0 < self.displacement < 0.5:
            raise ValueError("need supercell_min_length > 0 and displacement in (0, 0.5) A")
        if self.fc2_retry_min_length is not None and not self.fc2_retry_min_length > 0:
            raise ValueError(f"fc2_retry_min_length must be > 0 A or None, got "
                             f"{self.fc2_retry_min_length}")  # fmt: skip
        if self.budget_s is not None and not self.budget_s > 0:
            raise ValueError(f"budget_s must be > 0 seconds or None, got {self.budget_s}")

    def temperature_list(self) -> list[float]:
        temps = self.temperatures
        values = [float(temps)] if isinstance(temps, int | float) else [float(t) for t in temps]
        if not values or not all(math.isfinite(t) and t > 0 for t in values):
            raise ValueError(f"temperatures must be positive numbers, got {temps!r}")
        return values


# KappaSettings fields that act only on a value with imaginary modes (``reuses``)
FC2_RETRY = ("fc2_retry_min_length", "fc2_retry_max_atoms")


def _fc2_retry(settings: dict) -> dict | None:
    """The fc2 retry's fields, taken out of stored kappa ``settings``; None when off."""
    retry = {k: settings.pop(k, None) for k in FC2_RETRY}
    return None if retry["fc2_retry_min_length"] is None else retry


@dataclass
class EvaluateConfig:
    """What to compute for each structure, and how."""

    mlip: str = "sevennet"
    model_path: str | None = None
    ehull: bool = True
    fmax: float = 0.01  # eV/A, the paper's value for Ehull
    relax_steps: int = 500
    optimizer: str = "FIRE"
    timeout: float | None = 900.0  # seconds per relaxation or phonon calculation
    phonons: bool = False
    # Phonons need a tighter minimum than Ehull (the paper: 0.003 eV/A, 200 steps); a
    # relaxation that does not reach it counts as unstable. It keeps the symmetry found at
    # phonon.symprec, so that phonopy can use it (and a symmetry-lowering distortion shows
    # as an imaginary mode).
    phonon_fmax: float = 0.003
    phonon_steps: int = 200
    phonon: PhononSettings = field(default_factory=PhononSettings)
    # phonons only for structures whose Ehull is below this (None: all)
    phonon_ehull_max: float | None = None
    kappa: bool = False  # phono3py RTA; use a SevenNet model (CHGNet forces: nonsense kappa)
    # the MLIP of the kappa step (its own tight relaxation and the force constants); None:
    # the relaxation's. 7net-l3i5 is the most accurate of the three SevenNet models on Si
    # and 10 phononDB references (README, kappa: mean |log10 ratio| 0.14 against 0.27 for
    # 7net-0 and 0.39 for MF-0), at about 3x the cost
    kappa_mlip: str | None = "sevennet-l3i5"
    # a cheaper MLIP for the third-order constants alone (the hundreds of fc3 supercells of
    # a low-symmetry cell); kappa_mlip keeps the tight relaxation and fc2, so the
    # dispersion. None: kappa_mlip's. 7net-0 is ~4x cheaper than 7net-l3i5 (README, kappa)
    kappa_fc3_mlip: str | None = None
    kappa_settings: KappaSettings = field(default_factory=KappaSettings)
    dielectric: bool = False  # e3nn surrogate on the relaxed structure (no MLIP involved)
    dielectric_checkpoint: str | None = None  # None: the shipped model
    # Where the MLIP runs: cpu, cuda, cuda:N or auto (CUDA when present). Results agree to
    # float noise, so the device is not part of a label's settings signature.
    device: str = "cpu"
    # Fresh relaxations go to a worker in groups of this many and are relaxed together by
    # torch-sim (one model call per FIRE step for the group; ``batched.py``), SevenNet
    # models only. 1: one ASE relaxation at a time. Same convergence rule either way, so
    # not part of the signature either. None: AUTO_RELAX_BATCH when the MLIP runs on a GPU
    # and the batched path applies (a SevenNet model, FIRE), else 1. On this project's
    # 2-core CPU, through Dask, groups of 32 were no faster than one at a time (README,
    # throughput); on a GPU it was not measured.
    relax_batch: int | None = None

    def __post_init__(self) -> None:
        if self.mlip not in BACKENDS:
            raise ValueError(f"unknown MLIP {self.mlip!r}; choose from {', '.join(BACKENDS)}")
        if self.relax_batch is None:
            batched = self.mlip in BATCHED and self.optimizer == "FIRE" and self._on_gpu()
            self.relax_batch = AUTO_RELAX_BATCH if batched else 1
        if not isinstance(self.relax_batch, int) or self.relax_batch < 1:
            raise ValueError(f"relax_batch must be >= 1, got {self.relax_batch}")
        if self.relax_batch > 1 and self.mlip not in BATCHED:
            raise ValueError(f"relax_batch > 1 needs a SevenNet MLIP ({', '.join(BATCHED)}); "
                             f"{self.mlip!r} relaxes one structure at a time")  # fmt: skip
        if self.relax_batch > 1 and self.optimizer != "FIRE":
            raise ValueError(f"relax_batch > 1 relaxes with torch-sim's FIRE, not {self.optimizer}")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {self.device!r}: use auto, cpu, cuda or cuda:N")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("fmax", "phonon_fmax"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 eV/A, got {getattr(self, name)}")
        for name in ("relax_steps", "phonon_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.kappa_mlip is not None and self.kappa_mlip not in BACKENDS:
            raise ValueError(f"unknown kappa MLIP {self.kappa_mlip!r}; choose from "
                             f"{', '.join(BACKENDS)}")  # fmt: skip
        if self.kappa_fc3_mlip is not None and self.kappa_fc3_mlip not in BACKENDS:
            raise ValueError(f"unknown kappa fc3 MLIP {self.kappa_fc3_mlip!r}; choose from "
                             f"{', '.join(BACKENDS)}")  # fmt: skip
        if self.kappa and "chgnet" in (self.kappa_mlip or self.mlip, self.kappa_fc3_mlip):
            raise ValueError("kappa needs smooth forces: use a SevenNet model, not chgnet")
        if self.kappa_fc3_mlip == (self.kappa_mlip or self.mlip):
            self.kappa_fc3_mlip = None  # one engine: the one rule the label and signature read

    def _on_gpu(self) -> bool:
        from crysvcd.evaluate.mlip import mlip_device  # the one device rule (torch)

        return mlip_device(self.device).startswith("cuda")

    def wanted(self) -> tuple[str, ...]:
        asked = {"relax": True, "phonons": self.phonons, "kappa": self.kappa}
        asked["dielectric"] = self.dielectric
        return tuple(s for s in STEPS if asked[s])

    def reuses(self, step: str, known) -> bool:
        """Whether the ``step`` label stored in ``known`` (a row's labels) stands under these
        settings. kappa's ``budget_s`` bounds the cost, not the value (the same forces, fit and
        RTA run under any budget), so a kappa stored under another budget stands, except a
        skip under a smaller one: a larger budget may finish it. The fc2 retry
        (``fc2_retry_min_length``) changes only values with imaginary modes, so only those
        are redone when its settings change (labels stored before it had none)."""
        stored = known.get(f"{step}_settings")
        if step != "kappa" or stored is None:
            return stored == self.signature(step)
        old, new = json.loads(stored), json.loads(self.signature("kappa"))
        was, now = old.pop("budget_s", None), new.pop("budget_s", None)
        retry_was, retry_now = _fc2_retry(old), _fc2_retry(new)
        if old != new:
            return False
        larger = was is not None and (now is None or now > was)
        if known.get("kappa") is not None:
            if known.get("kappa_reliable") and not known.get("kappa_fc2_retried"):
                return True  # the retry did not run, and would not under any setting
            if retry_was != retry_now:
                return False
            # a retry that did not fit in the budget may fit in a larger one
            over = "budget_s" in str(known.get("kappa_fc2_retry") or "")
            return not (over and larger)
        return known.get("kappa_skipped") is None or not larger

    def signature(self, step: str) -> str:
        """The settings a stored ``step`` label must have been computed with to be reused."""
        if step == "relax":
            keys = ("mlip", "model_path", "ehull", "fmax", "relax_steps", "optimizer")
            values = {k: getattr(self, k) for k in keys}
        elif step == "phonons":
            values = {"mlip": self.mlip, "model_path": self.model_path}
            values |= {"fmax": self.phonon_fmax, "steps": self.phonon_steps}
            values |= {k: v for k, v in asdict(self.phonon).items() if k != "timeout"}
            values["ehull_max"] = self.phonon_ehull_max
        elif step == "kappa":
            if self.kappa_mlip is None:
                values = {"mlip": self.mlip, "model_path": self.model_path}
            else:
                values = {"mlip": self.kappa_mlip}
            if self.kappa_fc3_mlip is not None:
                # only when set, so labels stored before the option still match
                values["fc3_mlip"] = self.kappa_fc3_mlip
            values |= asdict(self.kappa_settings)
        elif step == "dielectric":
            values = {"checkpoint": self.dielectric_checkpoint or "shipped"}
        else:
            raise ValueError(f"unknown label step {step!r}")
        return json.dumps(values, sort_keys=True, default=str)
