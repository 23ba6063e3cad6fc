"""generate(): Stage I formulas -> Stage II structures -> files on disk, written as they come.

Everything that can be checked is checked before anything is written (formulas, atom
counts, conditions), so bad input leaves no partial output. During the run each finished
chunk is written at once (CIFs, extxyz, summary CSV rows), so an interrupted run keeps
every structure already made.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase.io import write as ase_write
from pymatgen.core import Composition, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from tqdm import tqdm

from crysvcd.chem.valence import label_valence
from crysvcd.conditioning import parse_conditions
from crysvcd.evaluate.mlip import get_calculator
from crysvcd.evaluate.rank import lowest_energy
from crysvcd.geometry import collapsed, shortest_distance, within_limits
from crysvcd.runinfo import write_run_record

SUMMARY_FIELDS = [
    "index", "file", "formula", "cell_formula", "kind", "valence_tokens", "space_group",
    "space_group_number", "density", "n_atoms", "min_distance", "valid", "candidates",
    "mlip_energy_per_atom",
]  # fmt: skip


@dataclass
class GenerateConfig:
    n: int = 20
    ionic_fraction: float = 0.7  # share of Stage I formulas drawn from the ionic model
    formulas: list[str] = field(default_factory=list)  # skip Stage I when given
    samples_per_formula: int = 1
    # >1: draw this many structures per output and keep the lowest single-point MLIP energy
    candidates: int = 1
    rank_mlip: str = "sevennet"
    steps: int = 1000
    corrector: bool = True
    seed: int = 0
    temperature: float = 1.0
    conditions: list[str] = field(default_factory=list)  # NAME=VALUE
    stage1_ionic: str | None = None  # checkpoints (default: shipped)
    stage1_alloy: str | None = None
    stage2: str | None = None
    chunk: int = 16  # structures written per step of the progress bar


def structure_summary(structure: Structure) -> dict:
    """Space group (spglib through pymatgen), density, atoms, shortest distance, validity."""
    n = len(structure)
    if collapsed(structure):
        # A collapsed or non-finite cell (possible with very few diffusion steps) must be
        # reported as invalid, not crash the run and lose what is already written.
        return {
            "space_group": "",
            "space_group_number": 0,
            "density": float("nan"),
            "n_atoms": n,
            "min_distance": float("nan"),
            "valid": False,
        }
    min_d = shortest_distance(structure)
    try:
        sga = SpacegroupAnalyzer(structure, symprec=0.1)
        sg, sgn = sga.get_space_group_symbol(), sga.get_space_group_number()
    except Exception:
        sg, sgn = "", 0
    return {
        "space_group": sg,
        "space_group_number": sgn,
        "density": round(float(structure.density), 4),
        "n_atoms": n,
        "min_distance": round(min_d, 4),
        "valid": within_limits(min_d, structure.volume),
    }


def _plan(cfg: GenerateConfig) -> list[tuple[Composition, str, str]]:
    """(composition, kind, valence tokens) per structure, all checked before any work."""
    if cfg.samples_per_formula < 1:
        raise ValueError(f"samples_per_formula must be >= 1, got {cfg.samples_per_formula}")
    if cfg.candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {cfg.candidates}")
    if cfg.formulas:
        items = []
        for f in cfg.formulas:
            a = label_valence(f)  # raises a clear error for unknown elements / no assignment
            n_atoms = int(a.composition.num_atoms)
            if n_atoms > 20:
                raise ValueError(f"formula {f!r} has {n_atoms} atoms; at most 20 are supported")
            items.append((a.composition, a.kind, str(a)))
    else:
        if cfg.n <= 0:
            raise ValueError(f"n must be a positive integer, got {cfg.n}")
        if not 0 <= cfg.ionic_fraction <= 1:
            raise ValueError(f"ionic_fraction must be in [0, 1], got {cfg.ionic_fraction}")
        from crysvcd.stage1.sample import _sampler
        from crysvcd.stage1.train import shipped_checkpoint

        n_ionic = round(cfg.n * cfg.ionic_fraction)
        items = []
        for kind, count, path in (
            ("ionic", n_ionic, cfg.stage1_ionic),
            ("alloy", cfg.n - n_ionic, cfg.stage1_alloy),
        ):
            if count == 0:
                continue
            sampler = _sampler(str(path or shipped_checkpoint(kind)))
            conds = cfg.conditions if sampler.model.properties else None
            formulas, _ = sampler.sample(count, cfg.temperature, seed=cfg.seed, conditions=conds)
            items += [(f.composition, kind, f.valence_string()) for f in formulas]
    return [item for item in items for _ in range(cfg.samples_per_formula)]


def generate(
    cfg: GenerateConfig | None = None, out_dir: str | Path | None = None, progress: bool = True
) -> list[Structure]:
    """Run Stage I (unless formulas are given) and Stage II; write files when ``out_dir``."""
    from crysvcd.stage2.sample import SamplerSettings, _sampler
    from crysvcd.stage2.train import shipped_checkpoint

    cfg = cfg or GenerateConfig()
    sampler2 = _sampler(str(cfg.stage2 or shipped_checkpoint()))
    conditions = parse_conditions(cfg.conditions, sampler2.model.properties)
    settings = SamplerSettings(steps=cfg.steps, corrector=cfg.corrector)
    plan = _plan(cfg)
    # Loaded before anything is written: an unknown or missing MLIP must not leave a half run.
    calculator = get_calculator(cfg.rank_mlip) if cfg.candidates > 1 else None

    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        write_run_record(out, asdict(cfg), cfg.seed, n_structures=len(plan))
        (out / "cif").mkdir(exist_ok=True)
        summary_fh = open(out / "summary.csv", "w", newline="")
        writer = csv.DictWriter(summary_fh, SUMMARY_FIELDS)
        writer.writeheader()
        extxyz = out / "structures.extxyz"
        extxyz.unlink(missing_ok=True)
    structures: list[Structure] = []
    bar = tqdm(total=len(plan), disable=not progress, desc="structures", unit="str")
    try:
        for start in range(0, len(plan), cfg.chunk):
            chunk = plan[start : start + cfg.chunk]
            k_c = cfg.candidates
            drawn = sampler2.sample(
                [c for c, _, _ in chunk for _ in range(k_c)],
                settings,
                seed=cfg.seed + start,
                conditions=conditions,
            )
            made, energies = drawn, [float("nan")] * len(drawn)
            if calculator is not None:
                picks = [
                    lowest_energy(drawn[i : i + k_c], calculator) for i in range(0, len(drawn), k_c)
                ]
                made, energies = [p[0] for p in picks], [p[1] for p in picks]
            for k, ((comp, kind, tokens), s, energy) in enumerate(zip(chunk, made, energies)):
                idx = start + k
                structures.append(s)
                if out:
                    name = f"{idx:05d}_{comp.reduced_formula}.cif"
                    s.to(filename=str(out / "cif" / name))
                    atoms = AseAtomsAdaptor.get_atoms(s)
                    atoms.info.update(
                        {
                            "index": idx,
                            "formula": comp.reduced_formula,
                            "valence_tokens": tokens,
                            "kind": kind,
                        }
                    )
                    ase_write(extxyz, atoms, format="extxyz", append=True)
                    row = {
                        "index": idx,
                        "file": f"cif/{name}",
                        "formula": comp.reduced_formula,
                        "cell_formula": comp.formula.replace(" ", ""),
                        "kind": kind,
                        "valence_tokens": tokens,
                        **structure_summary(s),
                        "candidates": k_c,
                        # blank when not ranked, or when every candidate failed in the MLIP
                        "mlip_energy_per_atom": round(energy, 5) if np.isfinite(energy) else "",
                    }
                    writer.writerow(row)
                    summary_fh.flush()
            bar.update(len(chunk))
    finally:
        bar.close()
        if out:
            summary_fh.close()
    return structures
