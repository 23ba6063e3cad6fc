"""The valence labeller: a cell composition -> charge-neutral (element^valence, count) tokens.

Rules (after CrysVCD, with its alloy rule fixed):
- A composition made only of metals is an alloy: every token has valence 0.
- Otherwise an ionic assignment is searched. Each element takes one allowed state, or two
  (mixed valence, e.g. Fe3O4 = Fe2+ x1, Fe3+ x2). Two states of one element must have the
  same sign, and no allowed state of that element may lie strictly between them
  (comproportionation: Fe2+ with Fe4+ would react to Fe3+). The most electronegative element
  must be an anion. The charges must sum to zero.
- A single element (Si, O2, C) is neutral as it stands: one zero-valence token, kind alloy.
- If no ionic assignment exists, every element is alloy-forming (``oxidation.is_alloy_forming``)
  and metals and metalloids make up at least ``METAL_RICH_FRACTION`` of the atoms (Mn3Si,
  Ni4N, CaNi5H), the composition is labelled an alloy. Anything else has no valid assignment.

Plausibility score (deterministic): the sum over atoms of log P(state | element), with P the
element's ICSD occurrence share (see ``oxidation``), minus ``MIXED_VALENCE_PENALTY`` for each
element that is split over two states. The search is a dynamic programme over partial
charges, pruned by the charge range the remaining elements can still reach, so it is exact
and fast (20 atoms, 6 elements: well under a millisecond).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Literal

from pymatgen.core import Composition, Element

from crysvcd.chem.electrons import Configuration, configuration
from crysvcd.chem.oxidation import METALLOIDS, check_element, is_alloy_forming, state_counts

MIXED_VALENCE_PENALTY = 1.0
METAL_RICH_FRACTION = 0.5

Kind = Literal["ionic", "alloy"]


class FormulaError(ValueError):
    """An empty, malformed or non-integer formula."""


class NoValidAssignmentError(ValueError):
    """No charge-neutral assignment obeys the valence rules."""


@dataclass(frozen=True, order=True)
class ValenceToken:
    """One (element^valence, count) token."""

    element: str
    valence: int
    count: int

    @property
    def species(self) -> str:
        """Species label such as ``Fe2+``, ``O2-`` or ``Ni0``."""
        return species_label(self.element, self.valence)

    @property
    def configuration(self) -> Configuration:
        return configuration(self.element, self.valence)

    def __str__(self) -> str:
        return f"{self.species}x{self.count}"


@dataclass(frozen=True)
class ValenceAssignment:
    """A labelled composition: its tokens, kind (ionic or alloy) and score."""

    composition: Composition
    tokens: tuple[ValenceToken, ...]
    kind: Kind
    score: float

    @property
    def charge(self) -> int:
        return sum(t.valence * t.count for t in self.tokens)

    def oxidation_states(self) -> dict[str, float]:
        """Mean oxidation state per element (as pymatgen's BVAnalyzer reports)."""
        totals: dict[str, list[int]] = {}
        for t in self.tokens:
            acc = totals.setdefault(t.element, [0, 0])
            acc[0] += t.valence * t.count
            acc[1] += t.count
        return {el: s / n for el, (s, n) in totals.items()}

    def __str__(self) -> str:
        return " ".join(str(t) for t in self.tokens)


def species_label(element: str, valence: int) -> str:
    if valence == 0:
        return f"{element}0"
    magnitude = "" if abs(valence) == 1 else str(abs(valence))
    return f"{element}{magnitude}{'+' if valence > 0 else '-'}"


def parse_composition(formula: str | Composition) -> Composition:
    """A cell composition with integer counts, or a clear ``FormulaError``."""
    if isinstance(formula, Composition):
        comp = formula
    else:
        if not isinstance(formula, str) or not formula.strip():
            raise FormulaError(f"empty formula {formula!r}")
        try:
            comp = Composition(formula.strip())
        except Exception as exc:  # pymatgen raises several types for bad strings
            raise FormulaError(f"malformed formula {formula!r}: {exc}") from None
    if len(comp) == 0 or comp.num_atoms <= 0:
        raise FormulaError(f"empty formula {formula!r}")
    for el, amount in comp.items():
        check_element(str(getattr(el, "symbol", el)))
        if amount < 0 or abs(amount - round(amount)) > 1e-6 or round(amount) == 0:
            raise FormulaError(
                f"formula {formula!r}: count of {el} is {amount}; counts must be positive integers"
            )
    return comp


def _electronegativity(symbol: str) -> float:
    x = Element(symbol).X
    return x if not math.isnan(x) else 0.0


@cache
def _log_share(symbol: str) -> dict[int, float]:
    counts = state_counts(symbol)
    total = sum(counts.values())
    return {s: math.log(c / total) for s, c in counts.items()}


@cache
def compatible_pairs(symbol: str) -> tuple[tuple[int, int], ...]:
    """State pairs (low, high) of one element that may coexist."""
    states = sorted(state_counts(symbol))
    return tuple((a, b) for a, b in zip(states, states[1:]) if (a > 0) == (b > 0))


def _element_options(symbol: str, n: int, anion_only: bool) -> list[tuple[int, float, tuple]]:
    """(charge, score, ((state, count), ...)) for every way to give ``n`` atoms valences."""
    logp = _log_share(symbol)
    options = []
    for s, lp in logp.items():
        if anion_only and s > 0:
            continue
        options.append((n * s, n * lp, ((s, n),)))
    for a, b in compatible_pairs(symbol):
        if anion_only and b > 0:
            continue
        for k in range(1, n):
            score = k * logp[a] + (n - k) * logp[b] - MIXED_VALENCE_PENALTY
            options.append((k * a + (n - k) * b, score, ((a, k), (b, n - k))))
    return options


def _best_ionic(counts: dict[str, int]) -> tuple[float, dict[str, tuple]] | None:
    symbols = sorted(counts, key=lambda s: (_electronegativity(s), s))
    top_x = _electronegativity(symbols[-1])
    per_element = {
        s: _element_options(s, counts[s], anion_only=_electronegativity(s) == top_x)
        for s in symbols
    }
    if any(not opts for opts in per_element.values()):
        return None
    # Fewest options first keeps the frontier of partial charges small.
    order = sorted(symbols, key=lambda s: (len(per_element[s]), s))
    lo_rest = [0] * (len(order) + 1)
    hi_rest = [0] * (len(order) + 1)
    for i in range(len(order) - 1, -1, -1):
        charges = [c for c, _, _ in per_element[order[i]]]
        lo_rest[i] = lo_rest[i + 1] + min(charges)
        hi_rest[i] = hi_rest[i + 1] + max(charges)

    frontier: dict[int, tuple[float, tuple]] = {0: (0.0, ())}
    for i, symbol in enumerate(order):
        nxt: dict[int, tuple[float, tuple]] = {}
        for q, (score, picks) in frontier.items():
            for c, sc, choice in per_element[symbol]:
                q2 = q + c
                if not (lo_rest[i + 1] <= -q2 <= hi_rest[i + 1]):
                    continue
                cand = (score + sc, picks + ((symbol, choice),))
                best = nxt.get(q2)
                # Ties are broken on the choice tuple so that the result is deterministic.
                if best is None or (cand[0], _key(cand[1])) > (best[0], _key(best[1])):
                    nxt[q2] = cand
        frontier = nxt
        if not frontier:
            return None
    if 0 not in frontier:
        return None
    score, picks = frontier[0]
    return score, dict(picks)


def _key(picks: tuple) -> tuple:
    return tuple((sym, tuple(-s for s, _ in ch), tuple(k for _, k in ch)) for sym, ch in picks)


def _sorted_tokens(tokens: list[ValenceToken]) -> tuple[ValenceToken, ...]:
    return tuple(
        sorted(tokens, key=lambda t: (_electronegativity(t.element), t.element, t.valence))
    )


def _alloy(comp: Composition, counts: dict[str, int]) -> ValenceAssignment:
    tokens = [ValenceToken(s, 0, n) for s, n in counts.items()]
    return ValenceAssignment(comp, _sorted_tokens(tokens), "alloy", 0.0)


def label_valence(formula: str | Composition) -> ValenceAssignment:
    """Label a cell composition with charge-neutral valence tokens.

    Raises ``FormulaError`` or ``UnknownElementError`` for bad input and
    ``NoValidAssignmentError`` when the valence rules admit no assignment.
    """
    comp = parse_composition(formula)
    counts = {str(el.symbol): int(round(n)) for el, n in comp.items()}
    if len(counts) == 1 or all(Element(s).is_metal for s in counts):
        return _alloy(comp, counts)
    best = _best_ionic(counts)
    if best is not None:
        score, picks = best
        tokens = [
            ValenceToken(sym, state, k) for sym, choice in picks.items() for state, k in choice
        ]
        return ValenceAssignment(comp, _sorted_tokens(tokens), "ionic", score)
    metallic = sum(n for s, n in counts.items() if Element(s).is_metal or s in METALLOIDS)
    metal_rich = metallic >= METAL_RICH_FRACTION * sum(counts.values())
    if metal_rich and all(is_alloy_forming(s) for s in counts):
        return _alloy(comp, counts)
    raise NoValidAssignmentError(
        f"no charge-neutral valence assignment for {comp.formula.replace(' ', '')}"
    )
