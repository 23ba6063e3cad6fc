import numpy as np
import pandas as pd

from crysvcd.chem.species import VOCAB_FILE, all_species, species_table
from crysvcd.datasets import data_path


def test_vocabulary_covers_lanthanides_and_zero_valence_only_for_alloy_formers():
    labels = {s.label for s in all_species()}
    for lab in ["La3+", "Ce4+", "Eu2+", "Gd3+", "Lu3+", "Fe2+", "O2-", "Ni0", "Si0"]:
        assert lab in labels
    assert "O0" not in labels and "F0" not in labels and "Cl0" not in labels


def test_shipped_configuration_matrix_matches_a_fresh_build():
    shipped = pd.read_csv(data_path(VOCAB_FILE))
    fresh = species_table()
    assert list(shipped["species"]) == list(fresh["species"])
    cols = [c for c in fresh.columns if c.startswith("x")]
    np.testing.assert_allclose(shipped[cols].to_numpy(), fresh[cols].to_numpy(), atol=1e-5)
