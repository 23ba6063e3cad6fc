"""MLIP backends as ASE calculators. Nothing is downloaded: weights ship inside the wheels.

| name | package | weights | licence | notes |
|---|---|---|---|---|
| sevennet | sevenn | 7net-0, inside the wheel | GPL-3.0 | smooth forces: use for phonons |
| sevennet-l3i5 | sevenn | 7net-l3i5 (l_max 3, 5 layers), in the wheel | GPL-3.0 | larger |
| sevennet-mf0 | sevenn | 7net-MF-0, PBE fidelity, inside the wheel | GPL-3.0 | multi-fidelity |
| chgnet | chgnet | inside the wheel | BSD-3 | relaxations, energies; forces too rough for phonons |
| mattersim | mattersim | a checkpoint file the user has | MIT | only with ``model_path`` |
| emt | ase | none (analytic) | LGPL-2.1 | toy potential for Al, Cu, Ag, Au, Ni, Pd, Pt (tests) |
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from ase.calculators.calculator import Calculator
from pymatgen.core import Element, Structure

from crysvcd.evaluate.settings import BACKENDS

# SevenNet weights inside the sevenn wheel, by backend name: (model, modal)
_SEVENNET = {
    "sevennet": ("7net-0", None),
    "sevennet-l3i5": ("7net-l3i5", None),
    "sevennet-mf0": ("7net-mf-0", "PBE"),  # PBE(+U) fidelity: the scale of the MP hull
}


class BackendUnavailable(RuntimeError):
    """The backend's package or weights are not installed."""


@cache
def _cached(name: str, model_path: str | None, device: str) -> Calculator:
    if name in _SEVENNET:
        try:
            from sevenn.calculator import SevenNetCalculator
        except ImportError as exc:
            raise BackendUnavailable(f"{name} needs 'pip install sevenn' (crysvcd[mlip])") from exc
        model, modal = _SEVENNET[name]
        return SevenNetCalculator(model_path or model, device=device, modal=modal)
    if name == "chgnet":
        try:
            from chgnet.model.dynamics import CHGNetCalculator
        except ImportError as exc:
            raise BackendUnavailable("chgnet needs 'pip install chgnet'") from exc
        return CHGNetCalculator(use_device=device)
    if name == "mattersim":
        if not model_path or not Path(model_path).exists():
            raise BackendUnavailable(
                "mattersim needs its checkpoint file: pass model_path (no weights are downloaded)"
            )
        try:
            from mattersim.forcefield import MatterSimCalculator
        except ImportError as exc:
            raise BackendUnavailable("mattersim needs 'pip install mattersim'") from exc
        return MatterSimCalculator(load_path=str(model_path), device=device)
    from ase.calculators.emt import EMT

    return EMT()


def get_calculator(
    name: str = "sevennet", model_path: str | Path | None = None, device: str = "cpu"
) -> Calculator:
    """An ASE calculator for ``name`` on ``device`` (cpu, cuda, cuda:N, auto); one instance
    per backend, weights file and device."""
    if name not in BACKENDS:
        raise ValueError(f"unknown MLIP {name!r}; choose from {', '.join(BACKENDS)}")
    return _cached(name, str(model_path) if model_path else None, mlip_device(device))


def mlip_device(name: str) -> str:
    """The device an MLIP runs on: ``auto`` -> cuda when present; cuda asked for but absent
    -> cpu, with a warning (``training.resolve_device``)."""
    from crysvcd.training import resolve_device

    return str(resolve_device(name))


def supported_numbers(calculator: Calculator) -> set[int] | None:
    """Atomic numbers the calculator knows, where it says so (SevenNet, EMT); else None."""
    type_map = getattr(calculator, "type_map", None)
    if isinstance(type_map, dict) and type_map:
        return {int(z) for z in type_map}
    if type(calculator).__name__ == "EMT":
        from ase.calculators.emt import parameters

        return {Element(symbol).Z for symbol in parameters}
    return None


def check_supported_elements(structure: Structure, calculator: Calculator) -> None:
    """Refuse an element the calculator has no parameters for, before any costly call."""
    if not structure.is_ordered:
        raise ValueError(
            f"{structure.composition.reduced_formula}: partial occupancies; phonons need an "
            "ordered structure"
        )
    known = supported_numbers(calculator)
    if known is None:
        return
    missing = sorted({el.symbol for el in structure.composition if el.Z not in known})
    if missing:
        raise ValueError(
            f"{structure.composition.reduced_formula}: the MLIP "
            f"({type(calculator).__name__}) has no parameters for element(s) "
            f"{', '.join(missing)}"
        )
