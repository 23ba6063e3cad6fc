"""generate(): Stage I formulas -> Stage II structures -> files on disk, written as they come.

Everything that can be checked is checked before anything is written (settings, models,
conditions, the output folder), so bad input leaves no partial output and never touches an
earlier run: a non-empty output folder is refused unless ``resume`` (continue it: the
plan and every chunk's random draws are seeded, so the missing structures come out as
they would have) or ``overwrite`` (replace it in one step). A given formula that cannot be
generated (no such element, too many atoms) is recorded as refused in ``summary.csv``; the
others go on. During the run each finished chunk is written at once (CIFs, extxyz,
``summary.csv`` rewritten atomically), so an interrupted run keeps every structure made.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Composition, Structure
from tqdm import tqdm

from crysvcd import geometry
from crysvcd.config import GenerateConfig
from crysvcd.runinfo import atomic_write_text, write_run_record

log = logging.getLogger(__name__)

SUMMARY_FIELDS = [
    "index", "file", "formula", "cell_formula", "kind", "valence_tokens", "space_group",
    "space_group_number", "density", "n_atoms", "min_distance", "valid", "invalid_reason",
    "known_match", "mp_formula_known", "candidates", "mlip_energy_per_atom", "screen_score",
]  # fmt: skip


@dataclass
class PlanItem:
    composition: Composition | None
    kind: str  # ionic, alloy, or none (a given formula without a valence assignment)
    tokens: str
    refused: str = ""  # why this item cannot be generated (then composition may be None)
    label: str = ""  # the formula as given or drawn
    score: float | None = None  # the stability screen's log-odds, when one chose it


def structure_summary(structure: Structure) -> dict:
    """Space group (spglib through pymatgen), density, atoms, shortest distance, validity."""
    reason = geometry.invalid_reason(structure)
    if geometry.collapsed(structure):
        return {"space_group": "", "space_group_number": 0, "density": float("nan"),
                "n_atoms": len(structure), "min_distance": float("nan"), "valid": False,
                "invalid_reason": reason}  # fmt: skip
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sga = SpacegroupAnalyzer(structure, symprec=0.1)
        sg, sgn = sga.get_space_group_symbol(), sga.get_space_group_number()
    except Exception:
        sg, sgn = "", 0
    return {
        "space_group": sg,
        "space_group_number": sgn,
        "density": round(float(structure.density), 4),
        "n_atoms": len(structure),
        "min_distance": round(geometry.shortest_distance(structure), 4),
        "valid": reason == "",
        "invalid_reason": reason,
    }


def novelty(structure: Structure) -> dict:
    from crysvcd.metrics import known_match, mp_formula_known

    return {
        "known_match": known_match(structure),
        "mp_formula_known": mp_formula_known(structure.composition),
    }


def _given(formula: str, max_atoms: int) -> PlanItem:
    """A given formula: its valence labels when it has them; refused when Stage II cannot
    take it."""
    from crysvcd.chem import MAX_Z, label_valence

    try:
        comp = Composition(formula)
        if not comp.valid or len(comp) == 0:
            raise ValueError("not a chemical formula")
        heavy = [el.symbol for el in comp.elements if el.Z > MAX_Z or el.is_noble_gas]
        if heavy:
            return PlanItem(comp, "none", "", f"element(s) {heavy} not supported", formula)
        n_atoms = comp.num_atoms
        if abs(n_atoms - round(n_atoms)) > 1e-6:
            return PlanItem(comp, "none", "", "fractional atom counts", formula)
        if n_atoms > max_atoms:
            return PlanItem(comp, "none", "", f"{int(n_atoms)} atoms > {max_atoms}", formula)
    except Exception as exc:
        return PlanItem(None, "none", "", f"unreadable formula ({exc})", formula)
    try:
        a = label_valence(formula)
        return PlanItem(a.composition, a.kind, str(a), "", formula)
    except ValueError as exc:
        log.warning("%s: no valence assignment (%s); generating its structure anyway", formula, exc)
        return PlanItem(comp, "none", "", "", formula)


def plan(cfg: GenerateConfig, max_atoms: int = 20) -> list[PlanItem]:
    """One item per structure, all decided before any work (Stage I runs here)."""
    if cfg.formulas:
        items = [_given(f, max_atoms) for f in cfg.formulas]
        if all(item.refused for item in items):
            raise ValueError(
                "no formula can be generated: "
                + "; ".join(f"{item.label}: {item.refused}" for item in items)
            )
    else:
        from crysvcd.stage1.sample import load_sampler

        n_ionic = round(cfg.n * cfg.ionic_fraction)
        items = []
        for kind, count, path in (
            ("ionic", n_ionic, cfg.stage1_ionic),
            ("alloy", cfg.n - n_ionic, cfg.stage1_alloy),
        ):
            if count == 0:
                continue
            sampler = load_sampler(path, kind)
            known = {s.name for s in sampler.model.properties}
            conds = [c for c in cfg.conditions if c.split("=", 1)[0].strip() in known]
            widened = cfg.screen or cfg.novel_formulas
            draws = count * cfg.screen_factor if widened else count
            formulas, _ = sampler.sample(
                draws, cfg.formula_temperature, seed=cfg.seed, conditions=conds,
                constrained=cfg.valence_masks, neutral_only=cfg.valence_masks,
            )  # fmt: skip
            drawn = [
                PlanItem(f.composition, kind, f.valence_string(), "", f.cell_formula)
                for f in formulas
            ]
            if cfg.novel_formulas:
                from crysvcd.metrics import mp_formula_known

                drawn = [it for it in drawn if not mp_formula_known(it.composition)]
                if len(drawn) < count:
                    log.warning("only %d of %d %s formulas drawn are new", len(drawn), draws, kind)
            if cfg.screen and cfg.screen_label:
                drawn = _usable(drawn, cfg.screen_label, count)
            items += _screened(drawn, cfg.screen, count) if cfg.screen else drawn[:count]
    return [item for item in items for _ in range(cfg.samples_per_formula)]


def _usable(drawn: list[PlanItem], label: str, n: int) -> list[PlanItem]:
    """The drawn formulas whose ``label`` would count (``evaluate.gap.blockers``); the
    others are logged with their reasons, counted."""
    from collections import Counter

    from crysvcd.evaluate.gap import blockers

    reasons = blockers(label, [it.label for it in drawn])
    kept = [it for it, why in zip(drawn, reasons) if not why]
    dropped = Counter(why.split(":")[0] for why in reasons if why)
    log.info("%s screen: %d of %d drawn formulas dropped before it picks (%s)", label,
             len(drawn) - len(kept), len(drawn), dict(dropped))  # fmt: skip
    if len(kept) < n:
        log.warning("only %d of %d drawn formulas are usable for %s", len(kept), n, label)
    return kept


def _screened(drawn: list[PlanItem], screen_path: str, n: int) -> list[PlanItem]:
    """The ``n`` drawn formulas the screen rates best (distinct ones first)."""
    from crysvcd.evaluate.screen import Screen, select

    if not drawn:
        return []
    screen = Screen.load(screen_path)
    x = np.stack([screen.descriptors(it.composition, it.kind, it.tokens) for it in drawn])
    scores = screen.score(x)
    for item, score in zip(drawn, scores):
        item.score = round(float(score), 4)
    return [drawn[i] for i in select(scores, [it.label for it in drawn], n)]


def prepare_out_dir(out: Path, resume: bool, overwrite: bool, config: dict) -> list[dict]:
    """Check the output folder before any write; returns the rows of a run being resumed."""
    if resume and overwrite:
        raise ValueError("choose one of resume and overwrite")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} is a file, not a folder")
    if not out.parent.exists():
        raise ValueError(f"output {out}: its parent folder {out.parent} does not exist")
    if not out.exists() or not any(out.iterdir()):
        return []
    if overwrite:
        return []
    if not resume:
        raise ValueError(
            f"output folder {out} is not empty: pass --resume to continue that run or "
            "--overwrite to replace it"
        )
    run = out / "run.json"
    if not run.exists():
        raise ValueError(f"{out} holds no run.json: not a generate run to resume")
    # a setting added after that run was made counts as its default there
    old = {**asdict(GenerateConfig()), **json.loads(run.read_text()).get("config", {})}
    differ = sorted(k for k in config if k != "chunk" and old.get(k) != config[k])
    if differ or old.get("chunk") != config["chunk"]:
        raise ValueError(
            f"cannot resume {out}: its run used other settings ({differ or ['chunk']})"
        )
    summary = out / "summary.csv"
    if not summary.exists():
        return []
    rows = list(csv.DictReader(open(summary, newline="")))
    return [r for r in rows if not r["file"] or (out / r["file"]).exists()]


def _replace_folder(out: Path) -> None:
    """Move an earlier run aside in one rename, then delete it."""
    if out.exists() and any(out.iterdir()):
        trash = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, trash)
        shutil.rmtree(trash)


def generate(
    cfg: GenerateConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    on_structure: Callable[[int, Structure, dict], None] | None = None,
) -> list[Structure]:
    """Run Stage I (unless formulas are given) and Stage II; write files when ``out_dir``.

    ``on_structure(index, structure, row)`` is called as each structure is written (the
    learning loop hands it to its labelling workers there)."""
    from crysvcd.stage2.sample import SamplerSettings, load_sampler

    cfg = cfg or GenerateConfig()
    sampler2 = load_sampler(cfg.stage2, cfg.device)
    from crysvcd.conditioning import parse_conditions

    stage2_props = {s.name for s in sampler2.model.properties}
    conditions = parse_conditions(
        [c for c in cfg.conditions if c.split("=", 1)[0].strip() in stage2_props],
        sampler2.model.properties,
    )
    settings = SamplerSettings(steps=cfg.steps, corrector=cfg.corrector, guidance=cfg.guidance,
                               precision=cfg.precision)  # fmt: skip
    if cfg.screen:  # read before anything is written: a bad file fails here
        from crysvcd.evaluate.screen import Screen

        Screen.load(cfg.screen)
    calculator = None
    if cfg.candidates > 1:  # loaded before anything is written: a missing MLIP fails here
        from crysvcd.evaluate.mlip import get_calculator

        calculator = get_calculator(cfg.rank_mlip)
    out = Path(out_dir) if out_dir else None
    done_rows = prepare_out_dir(out, resume, overwrite, asdict(cfg)) if out else []
    items = plan(cfg, sampler2.model.cfg.max_atoms)
    _check_conditions(cfg, stage2_props)

    if out:
        if overwrite:
            _replace_folder(out)
        (out / "cif").mkdir(parents=True, exist_ok=True)
        write_run_record(out, asdict(cfg), cfg.seed, n_structures=len(items))
        _rebuild_extxyz(out, done_rows)
    rows = {int(r["index"]): r for r in done_rows}
    structures: dict[int, Structure] = {}
    k_c = cfg.candidates
    per_chunk_steps = len(_steps(settings, sampler2))
    bar = tqdm(total=len(items) * k_c * per_chunk_steps, disable=not progress, unit="str",
               unit_scale=1 / (k_c * per_chunk_steps), desc="structures",
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}]")  # fmt: skip
    complete = [
        start for start in range(0, len(items), cfg.chunk)
        if all(i in rows for i in range(start, min(start + cfg.chunk, len(items))))
    ]  # fmt: skip
    bar.update(sum(min(cfg.chunk, len(items) - s) for s in complete) * k_c * per_chunk_steps)
    try:
        for start in range(0, len(items), cfg.chunk):
            chunk = list(enumerate(items[start : start + cfg.chunk], start))
            if all(i in rows for i, _ in chunk):
                continue
            live = [(i, it) for i, it in chunk if not it.refused]
            drawn = sampler2.sample(
                [it.composition for _, it in live for _ in range(k_c)],
                settings,
                seed=cfg.seed + start,
                conditions=conditions,
                progress=bar.update,
            ) if live else []  # fmt: skip
            bar.update((len(chunk) - len(live)) * k_c * per_chunk_steps)
            made = dict(zip([i for i, _ in live], _pick(drawn, k_c, calculator)))
            for i, item in chunk:
                if i in rows:
                    continue
                row = _row(i, item, made.get(i), k_c)
                if i in made:
                    structure = made[i][0]
                    structures[i] = structure
                    if out:
                        _write_structure(out, row, structure, item)
                if out:
                    rows[i] = row
                if on_structure is not None and i in made:
                    on_structure(i, made[i][0], row)
            if out:
                _write_summary(out, rows)
    finally:
        bar.close()
    return [structures[i] for i in sorted(structures)]


def _steps(settings, sampler) -> list[int]:
    from crysvcd.stage2.sample import timestep_schedule

    return timestep_schedule(sampler.model.cfg.timesteps, settings.steps)


def _check_conditions(cfg: GenerateConfig, stage2_props: set[str]) -> None:
    """Every condition must be known to at least one model that will use it."""
    from crysvcd.conditioning import split_condition

    if not cfg.conditions:
        return
    names = [split_condition(c)[0] for c in cfg.conditions]
    known = set(stage2_props)
    if not cfg.formulas:
        from crysvcd.stage1.sample import load_sampler

        for kind, path in (("ionic", cfg.stage1_ionic), ("alloy", cfg.stage1_alloy)):
            known |= {s.name for s in load_sampler(path, kind).model.properties}
    for c, name in zip(cfg.conditions, names):
        if name not in known:
            have = ", ".join(sorted(known)) or "none (unconditional models)"
            raise ValueError(
                f"unknown property {name!r} in condition {c!r}; the models know: {have}"
            )


def _pick(drawn: list[Structure], k: int, calculator) -> list[tuple[Structure, float]]:
    """(structure, MLIP energy) per output: the lowest-energy valid candidate of k, in its
    Niggli-reduced cell."""
    if calculator is None:
        return [(_niggli(s), float("nan")) for s in drawn]
    from crysvcd.evaluate.rank import lowest_energy

    picks = [lowest_energy(drawn[i : i + k], calculator) for i in range(0, len(drawn), k)]
    return [(_niggli(s), e) for s, e in picks]


def _niggli(structure: Structure) -> Structure:
    """The same crystal in its Niggli-reduced cell: the sampler's raw cell can be so skewed
    that its CIF (which stores lengths and angles) does not read back."""
    if geometry.collapsed(structure):
        return structure
    try:
        return structure.get_reduced_structure()
    except Exception:
        return structure


def _row(i: int, item: PlanItem, made: tuple[Structure, float] | None, k: int) -> dict:
    comp = item.composition
    row = {
        "index": i,
        "file": "",
        "formula": comp.reduced_formula if comp is not None else item.label,
        "cell_formula": comp.formula.replace(" ", "") if comp is not None else item.label,
        "kind": item.kind,
        "valence_tokens": item.tokens,
        "candidates": k,
        "screen_score": "" if item.score is None else item.score,
    }
    if made is None:
        row.update(valid=False, invalid_reason=f"refused: {item.refused}")
        return row
    structure, energy = made
    row.update(structure_summary(structure))
    row.update(novelty(structure))
    # blank when not ranked, or when every candidate failed in the MLIP
    row["mlip_energy_per_atom"] = round(energy, 5) if np.isfinite(energy) else ""
    row["file"] = f"cif/{i:05d}_{comp.reduced_formula}.cif"
    return row


def _write_structure(out: Path, row: dict, structure: Structure, item: PlanItem) -> None:
    from ase.io import write as ase_write
    from pymatgen.io.ase import AseAtomsAdaptor

    atomic_write_text(out / row["file"], structure.to(fmt="cif"))
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.info.update(index=row["index"], formula=row["formula"], kind=item.kind,
                      valence_tokens=item.tokens)  # fmt: skip
    ase_write(out / "structures.extxyz", atoms, format="extxyz", append=True)


def _write_summary(out: Path, rows: dict[int, dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, SUMMARY_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for i in sorted(rows):
        writer.writerow(rows[i])
    atomic_write_text(out / "summary.csv", buf.getvalue())


def _rebuild_extxyz(out: Path, rows: list[dict]) -> None:
    """structures.extxyz holding exactly the structures of the kept rows (resume)."""
    path = out / "structures.extxyz"
    path.unlink(missing_ok=True)
    if not rows:
        return
    from ase.io import write as ase_write
    from pymatgen.io.ase import AseAtomsAdaptor

    for r in sorted(rows, key=lambda r: int(r["index"])):
        if not r["file"]:
            continue
        atoms = AseAtomsAdaptor.get_atoms(Structure.from_file(out / r["file"]))
        atoms.info.update(index=int(r["index"]), formula=r["formula"], kind=r["kind"],
                          valence_tokens=r["valence_tokens"])  # fmt: skip
        ase_write(path, atoms, format="extxyz", append=True)
