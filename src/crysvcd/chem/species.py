"""The species vocabulary: every (element, valence) token and its electron-configuration vector.

Ionic species are the allowed states of ``oxidation``; alloy species are the zero-valence
tokens of alloy-forming elements. The table is deterministic (by atomic number, then
valence) and is also written to ``data/species_configurations.csv.gz`` so the matrix ships
with the package; ``tests/test_species.py`` checks the file against a fresh build.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
from pymatgen.core import Element

from crysvcd.chem.electrons import CONFIG_DIM, configuration
from crysvcd.chem.oxidation import allowed_states, is_alloy_forming, supported_elements
from crysvcd.chem.valence import species_label

VOCAB_FILE = "species_configurations.csv.gz"


@dataclass(frozen=True)
class Species:
    element: str
    valence: int

    @property
    def label(self) -> str:
        return species_label(self.element, self.valence)


@cache
def all_species() -> tuple[Species, ...]:
    """Every valence token: ionic states and zero-valence alloy tokens."""
    out = []
    for symbol in supported_elements():
        states = set(allowed_states(symbol))
        if is_alloy_forming(symbol):
            states.add(0)
        out.extend(Species(symbol, v) for v in sorted(states))
    return tuple(out)


def configuration_matrix(species: tuple[Species, ...] | None = None) -> np.ndarray:
    """(n_species, CONFIG_DIM) matrix of electron-configuration vectors."""
    species = species or all_species()
    mat = np.zeros((len(species), CONFIG_DIM), dtype=np.float32)
    for i, sp in enumerate(species):
        mat[i] = configuration(sp.element, sp.valence).vector()
    return mat


def species_table() -> pd.DataFrame:
    """The vocabulary as a table: label, element, valence, Z, notation and the vector."""
    species = all_species()
    mat = configuration_matrix(species)
    rows = []
    for sp, vec in zip(species, mat):
        conf = configuration(sp.element, sp.valence)
        rows.append(
            {
                "species": sp.label,
                "element": sp.element,
                "valence": sp.valence,
                "Z": Element(sp.element).Z,
                "configuration": conf.notation(),
                **{f"x{j}": float(v) for j, v in enumerate(vec)},
            }
        )
    return pd.DataFrame(rows)
