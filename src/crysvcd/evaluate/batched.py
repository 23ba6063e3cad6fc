"""Relax many structures at once with torch-sim: one model call per optimizer step for the
whole batch.

The optimizer is torch-sim's batched FIRE with a Fréchet cell parameterisation (the same
algorithm as ``relax.py``'s ASE FIRE + FrechetCellFilter, per system), and the rules are
``relax.py``'s: converged when the largest force, atomic or cell, is below ``fmax``; a
structure that reaches ``steps`` leaves the batch unconverged; one whose volume changes
more than tenfold, whose energy is not finite, or which runs past ``timeout`` seconds is a
failure recorded for that structure alone. Structures leave the batch as they finish and
queued ones take their place, up to ``max_atoms`` atoms in flight.

Backends: the SevenNet models of ``mlip.py`` (torch-sim's ``SevenNetModel``). Other
calculators keep the ASE path.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from functools import cache

import numpy as np
from pymatgen.core import Structure

from crysvcd import geometry
from crysvcd.evaluate.relax import RelaxationFailed, RelaxResult
from crysvcd.evaluate.settings import BATCHED


@cache
def torch_sim_model(name: str, device: str = "cpu", model_path: str | None = None):
    """torch-sim's SevenNet wrapper around the same weights as ``mlip.get_calculator`` (the
    wheel's, or ``model_path``'s); one per backend, weights and device."""
    if name not in BATCHED:
        raise ValueError(f"no batched path for {name!r} (batched: {', '.join(BATCHED)})")
    import sevenn.calculator
    import torch

    # torch-sim 0.3.0 (the newest on PyPI) looks for this name, which sevenn 0.13 dropped;
    # it only tells a TorchScript model from an eager one
    if not hasattr(sevenn.calculator, "torch_script_type"):
        sevenn.calculator.torch_script_type = torch.jit.ScriptModule
    from torch_sim.models.sevennet import SevenNetModel

    from crysvcd.evaluate.mlip import get_calculator, mlip_device

    calc = get_calculator(name, model_path, device)
    # a copy: torch-sim switches the model it wraps to batched input (set_is_batch_data),
    # which would break the cached ASE calculator that phonons and kappa use afterwards
    model = copy.deepcopy(calc.model)
    return SevenNetModel(model=model, modal=calc.modal, device=mlip_device(device))


@dataclass
class _Slot:
    index: int
    steps: int
    start: float
    volume0: float


def relax_batched(
    structures: list[Structure],
    model,
    fmax: float = 0.01,
    steps: int = 500,
    timeout: float | None = None,
    max_atoms: int = 400,
) -> list[RelaxResult | Exception]:
    """One result per structure, in order: a ``RelaxResult`` or the exception that ended it.

    ``model``: a torch-sim model (``torch_sim_model``)."""
    import torch
    import torch_sim as ts

    results: list[RelaxResult | Exception | None] = [None] * len(structures)
    queue = []
    for i, s in enumerate(structures):
        try:
            geometry.check(s)
            queue.append(i)
        except ValueError as exc:
            results[i] = exc
    init_fn, update_fn = ts.frechet_cell_fire(model)
    state, slots = None, []

    def admit() -> None:
        nonlocal state
        batch = []
        in_flight = 0 if state is None else state.n_atoms
        while queue and (not batch or in_flight + len(structures[queue[0]]) <= max_atoms):
            i = queue.pop(0)
            batch.append(i)
            in_flight += len(structures[i])
            if state is None and len(batch) == 1 and in_flight > max_atoms:
                break  # a structure larger than the budget runs alone
        if not batch:
            return
        new = init_fn(
            ts.initialize_state([structures[i] for i in batch], model.device, model.dtype)
        )
        now = time.perf_counter()
        slots.extend(_Slot(i, 0, now, structures[i].volume) for i in batch)
        state = new if state is None else ts.concatenate_states([state, new])

    admit()
    while state is not None and state.n_systems:
        state = update_fn(state)
        for slot in slots:
            slot.steps += 1
        fmax_now = _max_force(state)
        volumes = torch.linalg.det(state.cell).abs().detach().cpu().numpy()
        energies = state.energy.detach().cpu().numpy()
        now = time.perf_counter()
        done, reasons = [], {}
        for k, slot in enumerate(slots):
            if not math.isfinite(energies[k]):
                reasons[k] = RelaxationFailed("non-finite energy")
            elif not 0.1 < volumes[k] / slot.volume0 < 10:
                reasons[k] = RelaxationFailed("explosion: cell volume changed more than tenfold")
            elif timeout is not None and now - slot.start > timeout:
                reasons[k] = RelaxationFailed(f"timeout after {timeout:.0f} s")
            if k in reasons or fmax_now[k] < fmax or slot.steps >= steps:
                done.append(k)
        if done:
            if len(done) == state.n_systems:
                finished, state = state.split(), None
            else:
                finished = state.pop(done)  # in the order of done (ascending)
            for k, part in zip(done, finished):
                slot = slots[k]
                results[slot.index] = reasons.get(k) or _result(part, fmax_now[k], fmax, slot, now)
            slots = [s for k, s in enumerate(slots) if k not in set(done)]
            admit()
    return results


def _max_force(state) -> np.ndarray:
    """Largest atomic or cell force per system (eV/A), as the ASE filter measures it."""
    import torch

    f = state.forces.detach().norm(dim=1)
    per_system = torch.zeros(state.n_systems, dtype=f.dtype, device=f.device)
    per_system = per_system.scatter_reduce(0, state.system_idx, f, reduce="amax")
    cell = state.cell_forces.detach().norm(dim=2).max(dim=1).values
    return torch.maximum(per_system, cell).cpu().numpy()


def _result(part, residual: float, fmax: float, slot: _Slot, now: float) -> RelaxResult:
    structure = part.to_structures()[0]
    return RelaxResult(
        structure=Structure(structure.lattice, structure.species, structure.frac_coords),
        energy=float(part.energy.detach().cpu()[0]),
        converged=bool(residual < fmax),
        steps=slot.steps,
        fmax=float(residual),
        seconds=now - slot.start,
    )
