"""The labels of one structure, as steps of one shape.

``relax`` comes first (MLIP relaxation with a free cell, energy, energy above the MP hull)
and yields the relaxed structure; every other step (``phonons``, ``kappa``,
``dielectric``) is a function ``(relaxed structure, config, calculator) -> labels`` that
never raises: its failure is stored as ``<step>_error`` so the labels already computed
are kept. Each step has a settings signature: a stored label is reused only when it was
computed with the same settings (``EvaluateConfig.signature``).

A relaxed energy or Ehull outside physical bounds is an error, not a result: an MLIP can
return a huge negative energy for overlapping atoms, which would top any stability list.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict

from ase.calculators.calculator import Calculator
from pymatgen.core import Structure

from crysvcd.evaluate.hull import corrected_formation_energy, e_above_hull, unreliable
from crysvcd.evaluate.kappa import KappaResult
from crysvcd.evaluate.kappa_plan import KappaSkipped
from crysvcd.evaluate.relax import RelaxResult, relax
from crysvcd.evaluate.settings import EvaluateConfig, PhononSettings

ENERGY_RANGE = (-15.0, 5.0)  # eV/atom: outside, an MLIP artefact (measured pool: -10.6..0)
EHULL_RANGE = (-1.0, 10.0)  # eV/atom: below -1, an MLIP artefact, not a discovery


class UnphysicalLabel(ValueError):
    """A computed energy outside physical bounds."""


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def relax_labels(
    structure: Structure, cfg: EvaluateConfig, calculator: Calculator
) -> tuple[dict, Structure]:
    """Relaxation, energy and (with ``cfg.ehull``) energy above the hull. Raises when the
    relaxation fails or its energy is unphysical: there is then nothing to label."""
    r = relax(structure, calculator, cfg.fmax, cfg.relax_steps, cfg.optimizer, cfg.timeout)
    return result_labels(r, cfg), r.structure


def result_labels(r: RelaxResult, cfg: EvaluateConfig) -> dict:
    """The labels of a finished relaxation, by either path (ASE or batched)."""
    per_atom = r.energy / len(r.structure)
    if not ENERGY_RANGE[0] <= per_atom <= ENERGY_RANGE[1]:
        raise UnphysicalLabel(
            f"relaxed energy {per_atom:.3g} eV/atom outside {ENERGY_RANGE}: an MLIP artefact"
        )
    labels = {
        "reduced_formula": r.structure.composition.reduced_formula,
        "mlip": cfg.mlip,
        "mlip_energy": r.energy,
        "energy_per_atom": per_atom,
        "converged": r.converged,
        "relax_steps": r.steps,
        "residual_fmax": r.fmax,
        "relax_seconds": round(r.seconds, 2),
    }
    if cfg.ehull:
        try:
            ef = corrected_formation_energy(r.structure, r.energy)
            ehull = e_above_hull(r.structure.composition, ef)
            if not EHULL_RANGE[0] <= ehull <= EHULL_RANGE[1]:
                raise UnphysicalLabel(f"Ehull {ehull:.3g} eV/atom outside {EHULL_RANGE}")
            labels["formation_energy_per_atom"] = ef
            labels["e_above_hull"] = ehull
            labels["ehull_unreliable"] = unreliable(r.structure.composition)
            # A relaxation that did not converge counts as unstable (the paper's rule).
            labels["stable"] = bool(r.converged and ehull < 0.1)
        except Exception as exc:
            labels["ehull_error"] = error_text(exc)
    return labels


def phonon_labels(relaxed: Structure, cfg: EvaluateConfig, calculator: Calculator) -> dict:
    from crysvcd.evaluate.phonons import phonon_stability, slack_kappa

    try:
        tight = relax(
            relaxed,
            calculator,
            cfg.phonon_fmax,
            cfg.phonon_steps,
            cfg.optimizer,
            cfg.timeout,
            symprec=cfg.phonon.symprec,
        )
        if not tight.converged:
            return {
                "phonon_stable": False,
                "phonon_note": f"relaxation to fmax {cfg.phonon_fmax} did not converge "
                f"in {cfg.phonon_steps} steps (counted unstable)",
            }
        settings = PhononSettings(**{**asdict(cfg.phonon), "timeout": cfg.timeout})
        p = phonon_stability(tight.structure, calculator, settings)
    except Exception as exc:
        return {"phonon_error": error_text(exc)}
    return {
        "phonon_stable": p.stable,
        "phonon_min_frequency_thz": p.min_frequency,
        "phonon_n_imaginary": p.n_imaginary,
        "phonon_supercell": "x".join(map(str, p.supercell)),
        "phonon_displacements": p.n_displacements,
        "phonon_seconds": round(p.seconds, 2),
        # a harmonic estimate of kappa: the cheap screen before phono3py (phonons.slack_kappa)
        "kappa_slack": slack_kappa(relaxed, p.acoustic_max, p.primitive_atoms),
    }


def kappa_labels(relaxed: Structure, cfg: EvaluateConfig, calculator: Calculator) -> dict:
    from crysvcd.evaluate.kappa import lattice_thermal_conductivity, relax_for_kappa
    from crysvcd.evaluate.mlip import get_calculator

    if cfg.kappa_mlip not in (None, cfg.mlip):
        calculator = get_calculator(cfg.kappa_mlip, device=cfg.device)
    fc3 = cfg.kappa_fc3_mlip and get_calculator(cfg.kappa_fc3_mlip, device=cfg.device)

    # Its own symmetry-keeping tight relaxation: a slightly broken symmetry multiplies the
    # number of displaced supercells.
    try:
        tight = relax_for_kappa(relaxed, calculator, timeout=cfg.timeout)
        k = lattice_thermal_conductivity(tight.structure, calculator, cfg.kappa_settings, fc3)
    except KappaSkipped as skip:
        return {"kappa_skipped": skip.reason, "kappa_seconds": round(skip.seconds or 0.0, 2)}
    except Exception as exc:
        return {"kappa_error": error_text(exc)}
    out = {}
    for name, value in k.as_dict().items():
        if isinstance(value, list):
            value = "x".join(map(str, value)) if name == "mesh" else json.dumps(value)
        out[_kappa_label(name)] = value
    # imaginary modes drop out of the RTA sum: such a kappa is not a usable label
    out["kappa_reliable"] = k.dynamically_stable
    return out


def dielectric_labels(relaxed: Structure, cfg: EvaluateConfig, calculator: Calculator) -> dict:
    from crysvcd.dielectric import dielectric_labels as predict

    return predict(relaxed, cfg.dielectric_checkpoint)


def _kappa_label(name: str) -> str:
    """The stored name of a ``KappaResult`` field: ``kappa``, else prefixed ``kappa_``."""
    return name if name == "kappa" else f"kappa_{name.removeprefix('kappa_')}"


RUNS = {"phonons": phonon_labels, "kappa": kappa_labels, "dielectric": dielectric_labels}

# Every label a step can leave (its value, skip or error). A step computed again (new
# settings, a retry) clears those its earlier computation left (``stale_outcomes``), so a
# new value never sits beside an old skip or error.
OUTCOMES = {
    "phonons": (
        "phonon_stable", "phonon_note", "phonon_error", "phonon_skipped",
        "phonon_min_frequency_thz", "phonon_n_imaginary", "phonon_supercell",
        "phonon_displacements", "phonon_seconds", "kappa_slack",
    ),
    "kappa": (
        *(_kappa_label(f) for f in (*KappaResult.__dataclass_fields__, "dynamically_stable")),
        "kappa_reliable", "kappa_skipped", "kappa_error",
    ),
    "dielectric": ("dielectric_total", "dielectric_log10", "dielectric_error"),
}  # fmt: skip


def stale_outcomes(steps: tuple[str, ...], known: dict) -> dict:
    """None for every stored label of ``steps`` (a label given as None is removed when
    stored, ``ResultStore.update``), to go under the labels of their new computation."""
    return {k: None for step in steps for k in OUTCOMES.get(step, ()) if k in known}


def label_structure(
    structure: Structure,
    cfg: EvaluateConfig,
    steps: tuple[str, ...],
    relaxed: Structure | None = None,
    known: dict | None = None,
    calculator: Calculator | None = None,
) -> tuple[dict, Structure | None]:
    """The labels of ``steps`` for one structure (``relaxed`` and ``known``: a stored
    relaxation and its labels to build on when "relax" is not among the steps). Never
    raises: a failed relaxation gives ``status="failed"`` with the reason."""
    from crysvcd.evaluate.mlip import get_calculator

    start = time.perf_counter()
    labels: dict = {}
    try:
        calc = calculator
        if calc is None and _needs_relaxation_mlip(cfg, steps):
            calc = get_calculator(cfg.mlip, cfg.model_path, cfg.device)
        if "relax" in steps:
            relax_out, relaxed = relax_labels(structure, cfg, calc)
            labels.update(relax_out, status="ok", relax_settings=cfg.signature("relax"))
    except Exception as exc:
        return {"status": "failed", "error": error_text(exc)}, None
    return _later_steps(labels, relaxed, cfg, steps, known, calc, start), relaxed


def label_batch(
    structures: list[Structure], cfg: EvaluateConfig, steps: list[tuple[str, ...]]
) -> list[tuple[dict, Structure | None]]:
    """``label_structure`` for fresh structures whose relaxations run together in one
    torch-sim batch (``batched.relax_batched``, SevenNet models); every later step runs per
    structure as there. One result per structure, in order; never raises."""
    from crysvcd.evaluate.batched import relax_batched, torch_sim_model
    from crysvcd.evaluate.mlip import check_supported_elements, get_calculator

    try:
        calc = get_calculator(cfg.mlip, cfg.model_path, cfg.device)
        model = torch_sim_model(cfg.mlip, cfg.device, cfg.model_path)
    except Exception as exc:
        return [({"status": "failed", "error": error_text(exc)}, None) for _ in structures]
    refused: dict[int, Exception] = {}
    for i, s in enumerate(structures):
        try:  # an element the model lacks would fail the whole batch: refuse it alone
            check_supported_elements(s, calc)
        except Exception as exc:
            refused[i] = exc
    todo = [i for i in range(len(structures)) if i not in refused]
    try:
        relaxed = dict(zip(todo, relax_batched(
            [structures[i] for i in todo], model, cfg.fmax, cfg.relax_steps, cfg.timeout
        )))  # fmt: skip
    except Exception as exc:  # the batch itself broke: every structure records why
        relaxed = {i: exc for i in todo}
    out = []
    for i in range(len(structures)):
        r = refused.get(i) or relaxed[i]
        try:
            if isinstance(r, Exception):
                raise r
            labels = {**result_labels(r, cfg), "status": "ok"}
        except Exception as exc:
            out.append(({"status": "failed", "error": error_text(exc)}, None))
            continue
        labels["relax_settings"] = cfg.signature("relax")
        # this structure's own time: its time in the batch, then its later steps
        own_start = time.perf_counter() - r.seconds
        out.append((_later_steps(labels, r.structure, cfg, steps[i], {}, calc, own_start),
                    r.structure))  # fmt: skip
    return out


def _later_steps(labels, relaxed, cfg, steps, known, calc, start) -> dict:
    """Every step after the relaxation, in ``STEPS`` order (the one place that fixes it);
    a step's failure is its ``<step>_error``, never an exception."""
    for step in steps:
        if step == "relax":
            continue
        if step == "phonons" and not _phonons_wanted({**(known or {}), **labels}, cfg):
            ehull = {**(known or {}), **labels}.get("e_above_hull")
            labels["phonon_skipped"] = f"Ehull {ehull} not below {cfg.phonon_ehull_max}"
        else:
            labels.update(RUNS[step](relaxed, cfg, calc))
        labels[f"{step}_settings"] = cfg.signature(step)
    labels["seconds"] = round(time.perf_counter() - start, 2)
    return labels


def _needs_relaxation_mlip(cfg: EvaluateConfig, steps: tuple[str, ...]) -> bool:
    """Whether ``steps`` use ``cfg.mlip`` itself: a kappa-only relabel with its own MLIP
    (or a dielectric one) need not load it, so a GPU call can carry the kappa weights alone
    (tools/device/kappa.sh)."""
    kappa_own = "kappa" in steps and cfg.kappa_mlip in (None, cfg.mlip)
    return bool({"relax", "phonons"} & set(steps)) or kappa_own


def _phonons_wanted(labels: dict, cfg: EvaluateConfig) -> bool:
    if cfg.phonon_ehull_max is None:
        return True
    ehull = labels.get("e_above_hull")
    return ehull is not None and math.isfinite(ehull) and ehull < cfg.phonon_ehull_max
