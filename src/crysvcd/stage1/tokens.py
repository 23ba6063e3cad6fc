"""Stage I vocabulary: species ids, counts, and the rules that decoding enforces.

A formula is the sequence START, (species, count), ..., END. Species ids 0..2 are PAD, START
and END; count id 0 goes with the special tokens and 1..max_count are atom counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from crysvcd.chem.species import Species, all_species, configuration_matrix
from crysvcd.chem.valence import ValenceAssignment, ValenceToken, compatible_pairs

PAD, START, END = 0, 1, 2
N_SPECIAL = 3


@dataclass
class Vocabulary:
    """Species of one model kind (ionic: non-zero valences; alloy: zero valence)."""

    kind: str
    species: tuple[Species, ...]

    @classmethod
    def for_kind(cls, kind: str) -> Vocabulary:
        if kind not in ("ionic", "alloy"):
            raise ValueError(f"kind must be 'ionic' or 'alloy', not {kind!r}")
        want_zero = kind == "alloy"
        return cls(kind, tuple(s for s in all_species() if (s.valence == 0) == want_zero))

    @classmethod
    def from_labels(cls, kind: str, labels: list[str]) -> Vocabulary:
        by_label = {s.label: s for s in all_species()}
        return cls(kind, tuple(by_label[lab] for lab in labels))

    @property
    def size(self) -> int:
        return N_SPECIAL + len(self.species)

    @cached_property
    def index(self) -> dict[tuple[str, int], int]:
        return {(s.element, s.valence): N_SPECIAL + i for i, s in enumerate(self.species)}

    def labels(self) -> list[str]:
        return [s.label for s in self.species]

    def config_matrix(self) -> torch.Tensor:
        """(size, CONFIG_DIM); special tokens get zero vectors."""
        mat = configuration_matrix(self.species)
        pad = np.zeros((N_SPECIAL, mat.shape[1]), dtype=np.float32)
        return torch.from_numpy(np.concatenate([pad, mat]))

    def valences(self) -> torch.Tensor:
        return torch.tensor([0] * N_SPECIAL + [s.valence for s in self.species])

    def compatibility(self) -> torch.Tensor:
        """(size, size) bool: may species i and j appear in one formula?

        Never the same species twice; two species of one element only when the valence
        rules allow that pair (same sign, no allowed state between: comproportionation).
        Special tokens are compatible with everything.
        """
        n = self.size
        ok = torch.ones(n, n, dtype=torch.bool)
        elements = [None] * N_SPECIAL + [s.element for s in self.species]
        vals = [0] * N_SPECIAL + [s.valence for s in self.species]
        pairs = {el: set(compatible_pairs(el)) for el in set(e for e in elements if e)}
        for i in range(N_SPECIAL, n):
            for j in range(N_SPECIAL, n):
                if elements[i] != elements[j]:
                    continue
                lo, hi = sorted((vals[i], vals[j]))
                ok[i, j] = i != j and (lo, hi) in pairs[elements[i]]
        return ok

    def encode(
        self, assignment: ValenceAssignment, max_count: int = 20
    ) -> tuple[list[int], list[int]]:
        """(species ids, counts) of the tokens, in their stored order, without START/END."""
        if assignment.kind != self.kind:
            raise ValueError(f"{assignment} is {assignment.kind}, this vocabulary is {self.kind}")
        ids, counts = [], []
        for t in assignment.tokens:
            key = (t.element, t.valence)
            if key not in self.index:
                raise ValueError(f"species {t.species} is not in the {self.kind} vocabulary")
            if not 1 <= t.count <= max_count:
                raise ValueError(f"count {t.count} of {t.species} is outside 1..{max_count}")
            ids.append(self.index[key])
            counts.append(t.count)
        return ids, counts

    def decode(self, ids: list[int], counts: list[int]) -> tuple[ValenceToken, ...]:
        out = []
        for i, c in zip(ids, counts):
            if i < N_SPECIAL:
                continue
            s = self.species[i - N_SPECIAL]
            out.append(ValenceToken(s.element, s.valence, int(c)))
        return tuple(out)


MAX_ABS_VALENCE = 8


def reachable_charges(valences, max_tokens: int, max_atoms: int) -> torch.Tensor:
    """R[r, a, q + offset]: can charge q be made by at most r tokens holding at most a atoms,
    using species of the given valences?

    Each valence is used by at most one token: two tokens of one valence carry the same
    charge and atoms as one token with the summed count, so this loses nothing and keeps
    the table small. Which element a species belongs to is ignored, so the table slightly
    over-approximates what can be reached. ``offset = MAX_ABS_VALENCE * max_atoms``.
    """
    offset = MAX_ABS_VALENCE * max_atoms
    width = 2 * offset + 1
    reach = torch.zeros(max_tokens + 1, max_atoms + 1, width, dtype=torch.bool)
    reach[:, :, offset] = True
    for v in sorted(set(valences) - {0}):
        new = reach.clone()
        for c in range(1, max_atoms + 1):
            shift = v * c
            src = reach[:-1, :-c]
            if shift > 0:
                new[1:, c:, shift:] |= src[:, :, :-shift]
            else:
                new[1:, c:, :shift] |= src[:, :, -shift:]
        reach = new
    return reach
