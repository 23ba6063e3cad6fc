import pytest
from pymatgen.core import Element

from crysvcd.chem.electrons import CONFIG_DIM, configuration


@pytest.mark.parametrize(
    "symbol, charge, expected",
    [
        ("Fe", 2, "[Ar]3d6"),
        ("Fe", 3, "[Ar]3d5"),
        ("Cu", 1, "[Ar]3d10"),
        ("Cu", 0, "[Ar]3d104s1"),  # Aufbau exception
        ("Cr", 0, "[Ar]3d54s1"),
        ("Pd", 0, "[Kr]4d10"),
        ("O", -2, "[Ne]"),
        ("Cl", -1, "[Ar]"),
        ("Ti", 4, "[Ar]"),
        ("Ce", 3, "[Xe]4f1"),  # 6s and 5d leave before 4f
        ("U", 6, "[Rn]"),  # 7s, 6d, then 5f; never the 6p core
        ("Pt", 2, "[Xe]4f145d8"),
    ],
)
def test_hand_checked_configurations(symbol, charge, expected):
    assert configuration(symbol, charge).notation() == expected


def test_neutral_atoms_match_pymatgen_nist_data():
    for z in range(1, 95):
        el = Element.from_Z(z)
        ref = {f"{n}{orb}": k for n, orb, k in el.full_electronic_structure}
        assert configuration(el.symbol, 0).occupied() == ref, el.symbol


def test_electron_count_and_vector():
    conf = configuration("Fe", 2)
    assert conf.n_electrons == 24
    assert conf.atomic_number == 26
    assert conf.valence_occupancy == {"s": 0, "p": 0, "d": 6, "f": 0}
    vec = conf.vector()
    assert vec.shape == (CONFIG_DIM,)
    assert configuration("O", -2).valence_occupancy == {"s": 2, "p": 6, "d": 0, "f": 0}
