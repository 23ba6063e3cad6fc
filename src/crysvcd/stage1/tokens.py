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

    def encode(self, assignment: ValenceAssignment) -> tuple[list[int], list[int]]:
        """(species ids, counts) of the tokens, in their stored order, without START/END."""
        if assignment.kind != self.kind:
            raise ValueError(f"{assignment} is {assignment.kind}, this vocabulary is {self.kind}")
        ids, counts = [], []
        for t in assignment.tokens:
            key = (t.element, t.valence)
            if key not in self.index:
                raise ValueError(f"species {t.species} is not in the {self.kind} vocabulary")
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


def reachable_charges(valences: list[int], max_tokens: int, max_atoms: int) -> torch.Tensor:
    """R[r, a, q + offset]: can charge q be made by at most r tokens with at most a atoms?

    Species identity is ignored (there are dozens of species per valence), so this is an
    over-approximation used to mask choices after which neutrality is out of reach.
    """
    vals = sorted({v for v in valences if v != 0})
    offset = max(abs(v) for v in vals) * max_atoms if vals else 0
    width = 2 * offset + 1
    reach = torch.zeros(max_tokens + 1, max_atoms + 1, width, dtype=torch.bool)
    reach[:, :, offset] = True
    for r in range(1, max_tokens + 1):
        for a in range(1, max_atoms + 1):
            cur = reach[r - 1, a].clone()
            for c in range(1, a + 1):
                prev = reach[r - 1, a - c]
                for v in vals:
                    shift = v * c
                    if shift > 0:
                        cur[shift:] |= prev[:-shift]
                    else:
                        cur[:shift] |= prev[-shift:]
            reach[r, a] = cur
    return reach
