"""Allowed oxidation states per element, with their frequency.

Source: the ICSD occurrence counts of each ionic species that ship with pymatgen
(``pymatgen/core/icsd_bv.yaml``, key ``occurrence``; the statistics behind
``Composition.oxi_state_guesses``). A state is allowed when it appears at least
``MIN_COUNT`` times and in at least ``MIN_SHARE`` of the element's non-zero ICSD
occurrences; pymatgen's curated ``Element.icsd_oxidation_states`` are always allowed.
Elements that the ICSD table lacks (Au, Pt, Os, Tc, Pm and the early actinides) fall back
to pymatgen's ``Element.oxidation_states`` with pseudo-counts, common states weighted higher.

Zero valence is reserved for alloy-forming elements: metals, metalloids, and the non-metals
that ICSD records in the zero state in at least ``ZERO_STATE_SHARE`` of their entries (H, B,
C, N, P, S, Se: the interstitial and metal-rich formers of Ni4N, CaNi5H, Pd4Se). Halogens and
oxygen stay below that share. Zero valence is what the alloy model uses, never part of an
ionic assignment.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from monty.serialization import loadfn
from pymatgen.core import Element
from pymatgen.core import composition as _pmg_composition

MIN_COUNT = 3
MIN_SHARE = 0.01
FALLBACK_COMMON_COUNT = 50
FALLBACK_OTHER_COUNT = 5

NOBLE_GASES = frozenset({"He", "Ne", "Ar", "Kr", "Xe", "Rn", "Og"})
# Metalloids can sit in intermetallics (Mn3Si, NiSb) as well as in ionic compounds.
METALLOIDS = frozenset({"B", "Si", "Ge", "As", "Sb", "Te"})
# Heaviest element we model: no ICSD statistics or MP-20 entries beyond plutonium.
MAX_Z = 94
ZERO_STATE_SHARE = 0.10

_SPECIES_RE = re.compile(r"^([A-Z][a-z]?)(\d*)([+-])$")


class UnknownElementError(ValueError):
    """A symbol that is not a chemical element we support."""


@cache
def _icsd_counts() -> dict[str, dict[int, int]]:
    path = Path(_pmg_composition.__file__).with_name("icsd_bv.yaml")
    out: dict[str, dict[int, int]] = {}
    for key, count in loadfn(path)["occurrence"].items():
        match = _SPECIES_RE.match(key)
        if match is None:
            continue
        symbol, magnitude, sign = match.groups()
        state = int(magnitude or 1) * (1 if sign == "+" else -1)
        out.setdefault(symbol, {})[state] = int(count)
    return out


def check_element(symbol: str) -> Element:
    """Return the pymatgen Element for ``symbol`` or raise a clear error."""
    if not isinstance(symbol, str) or not Element.is_valid_symbol(symbol):
        raise UnknownElementError(f"unknown element symbol {symbol!r}")
    if symbol in NOBLE_GASES:
        raise UnknownElementError(f"noble gas {symbol!r} has no valence tokens (not supported)")
    element = Element(symbol)
    if element.Z > MAX_Z:
        raise UnknownElementError(f"element {symbol!r} (Z={element.Z}) is beyond Pu: not supported")
    return element


def is_alloy_forming(symbol: str) -> bool:
    """Metals and metalloids may take the zero-valence (alloy) token."""
    element = check_element(symbol)
    if element.is_metal or symbol in METALLOIDS:
        return True
    counts = _icsd_counts().get(symbol, {})
    total = sum(counts.values())
    return total > 0 and counts.get(0, 0) >= ZERO_STATE_SHARE * total


@cache
def state_counts(symbol: str) -> dict[int, int]:
    """Allowed non-zero oxidation states of ``symbol`` mapped to their ICSD counts."""
    element = check_element(symbol)
    counts = {s: c for s, c in _icsd_counts().get(symbol, {}).items() if s != 0}
    if counts:
        total = sum(counts.values())
        curated = set(element.icsd_oxidation_states)
        kept = {
            s: c
            for s, c in counts.items()
            if s in curated or (c >= MIN_COUNT and c >= MIN_SHARE * total)
        }
        if kept:
            return dict(sorted(kept.items()))
    common = set(element.common_oxidation_states)
    states = set(element.oxidation_states) | common
    return {
        s: FALLBACK_COMMON_COUNT if s in common else FALLBACK_OTHER_COUNT
        for s in sorted(states)
        if s != 0
    }


def allowed_states(symbol: str) -> tuple[int, ...]:
    """Allowed non-zero oxidation states, ascending."""
    return tuple(state_counts(symbol))


def supported_elements() -> tuple[str, ...]:
    """Every element that has valence tokens, by atomic number."""
    out = []
    for z in range(1, MAX_Z + 1):
        symbol = Element.from_Z(z).symbol
        if symbol in NOBLE_GASES:
            continue
        if state_counts(symbol):
            out.append(symbol)
    return tuple(out)
