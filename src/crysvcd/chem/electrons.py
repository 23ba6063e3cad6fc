"""Ground-state electron configurations of atoms and ions (Aufbau with its exceptions).

The neutral atom fills subshells in Madelung order; the known exceptions (Cr, Cu, Nb, Mo,
Ru, Rh, Pd, Ag, Pt, Au, La, Ce, Gd, Ac, Th, Pa, U, Np) move electrons between the
subshells named in ``_EXCEPTIONS``. A cation loses electrons from the subshell with the
highest n first (ties: highest l), so 4s empties before 3d; an anion gains electrons in
Aufbau order. The result is checked against pymatgen's NIST-based
``Element.full_electronic_structure`` in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from pymatgen.core import Element

SUBSHELLS: tuple[str, ...] = (
    "1s", "2s", "2p", "3s", "3p", "4s", "3d", "4p", "5s", "4d",
    "5p", "6s", "4f", "5d", "6p", "7s", "5f", "6d", "7p",
)  # fmt: skip
_CAPACITY = {"s": 2, "p": 6, "d": 10, "f": 14}
_L = {"s": 0, "p": 1, "d": 2, "f": 3}
_NOBLE_CORES = ((86, "Rn"), (54, "Xe"), (36, "Kr"), (18, "Ar"), (10, "Ne"), (2, "He"))

# Neutral-atom deviations from Madelung filling: subshell -> change of occupancy.
_EXCEPTIONS: dict[int, dict[str, int]] = {
    24: {"4s": -1, "3d": 1},  # Cr
    29: {"4s": -1, "3d": 1},  # Cu
    41: {"5s": -1, "4d": 1},  # Nb
    42: {"5s": -1, "4d": 1},  # Mo
    44: {"5s": -1, "4d": 1},  # Ru
    45: {"5s": -1, "4d": 1},  # Rh
    46: {"5s": -2, "4d": 2},  # Pd
    47: {"5s": -1, "4d": 1},  # Ag
    57: {"4f": -1, "5d": 1},  # La
    58: {"4f": -1, "5d": 1},  # Ce
    64: {"4f": -1, "5d": 1},  # Gd
    78: {"6s": -1, "5d": 1},  # Pt
    79: {"6s": -1, "5d": 1},  # Au
    89: {"5f": -1, "6d": 1},  # Ac
    90: {"5f": -2, "6d": 2},  # Th
    91: {"5f": -1, "6d": 1},  # Pa
    92: {"5f": -1, "6d": 1},  # U
    93: {"5f": -1, "6d": 1},  # Np
}

# Length of the feature vector used by the models: Z, charge, 4 valence counts, 19 subshells.
CONFIG_DIM = 2 + 4 + len(SUBSHELLS)


def _capacity(subshell: str) -> int:
    return _CAPACITY[subshell[-1]]


@dataclass(frozen=True)
class Configuration:
    """Electron configuration of an element in a given oxidation state."""

    symbol: str
    oxidation_state: int
    atomic_number: int
    occupancy: tuple[int, ...]  # electrons in each of SUBSHELLS
    core: str  # noble-gas core of the neutral atom, e.g. "Ar"

    @property
    def n_electrons(self) -> int:
        return sum(self.occupancy)

    def occupied(self) -> dict[str, int]:
        return {s: n for s, n in zip(SUBSHELLS, self.occupancy) if n}

    def _core_subshells(self) -> set[str]:
        core_z = next((z for z, sym in _NOBLE_CORES if sym == self.core), 0)
        return set(_madelung_fill(core_z)) if core_z else set()

    @property
    def valence_occupancy(self) -> dict[str, int]:
        """Electrons outside the noble-gas core, summed by l (s, p, d, f)."""
        core = self._core_subshells()
        out = {"s": 0, "p": 0, "d": 0, "f": 0}
        for sub, n in zip(SUBSHELLS, self.occupancy):
            if sub not in core:
                out[sub[-1]] += n
        return out

    def notation(self) -> str:
        """Noble-gas notation of the largest filled noble-gas core, e.g. ``[Ar]3d6``, ``[Ne]``."""
        occ = dict(zip(SUBSHELLS, self.occupancy))
        core: set[str] = set()
        prefix = ""
        for z, sym in _NOBLE_CORES:
            subs = set(_madelung_fill(z))
            if all(occ[s] == _capacity(s) for s in subs):
                core, prefix = subs, f"[{sym}]"
                break
        shown = [(s, n) for s, n in occ.items() if n and s not in core]
        shown.sort(key=lambda item: (int(item[0][0]), _L[item[0][1]]))
        return prefix + "".join(f"{s}{n}" for s, n in shown)

    def vector(self) -> np.ndarray:
        """Model features: Z/100, charge/8, valence s,p,d,f fractions, subshell fractions."""
        val = self.valence_occupancy
        head = [self.atomic_number / 100.0, self.oxidation_state / 8.0]
        head += [val["s"] / 2, val["p"] / 6, val["d"] / 10, val["f"] / 14]
        tail = [n / _capacity(s) for s, n in zip(SUBSHELLS, self.occupancy)]
        return np.asarray(head + tail, dtype=np.float32)


@cache
def _madelung_fill(n_electrons: int) -> dict[str, int]:
    occ: dict[str, int] = {}
    left = n_electrons
    for sub in SUBSHELLS:
        if left <= 0:
            break
        take = min(left, _capacity(sub))
        occ[sub] = take
        left -= take
    if left > 0:
        raise ValueError(f"{n_electrons} electrons exceed the subshells modelled (up to 7p)")
    return occ


def _neutral(z: int) -> dict[str, int]:
    occ = dict(_madelung_fill(z))
    for sub, delta in _EXCEPTIONS.get(z, {}).items():
        occ[sub] = occ.get(sub, 0) + delta
    return {s: n for s, n in occ.items() if n}


def _remove_one(occ: dict[str, int], core: set[str]) -> None:
    # Valence subshells empty first (7s, 6d, then 5f for U), highest n then highest l.
    sub = max(occ, key=lambda s: (s not in core, int(s[0]), _L[s[1]]))
    occ[sub] -= 1
    if occ[sub] == 0:
        del occ[sub]


def _add_one(occ: dict[str, int]) -> None:
    for sub in SUBSHELLS:
        if occ.get(sub, 0) < _capacity(sub):
            occ[sub] = occ.get(sub, 0) + 1
            return
    raise ValueError("no free subshell to add an electron to")


@cache
def configuration(symbol: str, oxidation_state: int = 0) -> Configuration:
    """Ground-state configuration of ``symbol`` carrying charge ``oxidation_state``."""
    z = Element(symbol).Z
    if oxidation_state > z:
        raise ValueError(f"{symbol}{oxidation_state:+d} would have a negative electron count")
    occ = _neutral(z)
    core_z, core = next(((cz, sym) for cz, sym in _NOBLE_CORES if cz < z), (0, ""))
    core_subshells = set(_madelung_fill(core_z))
    for _ in range(abs(oxidation_state)):
        if oxidation_state > 0:
            _remove_one(occ, core_subshells)
        else:
            _add_one(occ)
    return Configuration(
        symbol=symbol,
        oxidation_state=oxidation_state,
        atomic_number=z,
        occupancy=tuple(occ.get(s, 0) for s in SUBSHELLS),
        core=core,
    )
