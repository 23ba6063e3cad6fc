import pytest

from crysvcd.chem.oxidation import UnknownElementError, allowed_states
from crysvcd.chem.valence import (
    FormulaError,
    NoValidAssignmentError,
    compatible_pairs,
    label_valence,
)


def tokens(formula):
    return {(t.element, t.valence): t.count for t in label_valence(formula).tokens}


def test_mixed_valence():
    assert tokens("Fe3O4") == {("Fe", 2): 1, ("Fe", 3): 2, ("O", -2): 4}
    assert tokens("Pb3O4") == {("Pb", 2): 2, ("Pb", 4): 1, ("O", -2): 4}


def test_compounds_with_non_metals_are_ionic():
    a = label_valence("Cu2ZnSnS4")
    assert a.kind == "ionic"
    assert tokens("Cu2ZnSnS4") == {("Cu", 1): 2, ("Zn", 2): 1, ("Sn", 4): 1, ("S", -2): 4}
    assert tokens("Li3PS4") == {("Li", 1): 3, ("P", 5): 1, ("S", -2): 4}
    assert label_valence("Li3PS4").kind == "ionic"


@pytest.mark.parametrize("formula", ["Ni3Al", "TiCu4", "Mn3Si"])
def test_alloys(formula):
    a = label_valence(formula)
    assert a.kind == "alloy"
    assert all(t.valence == 0 for t in a.tokens)


@pytest.mark.parametrize("formula", ["NaCl", "Fe3O4", "Li7La3Zr2O12", "Ba2YCu3O7", "CeO2", "EuS"])
def test_charge_neutral(formula):
    a = label_valence(formula)
    assert a.charge == 0
    assert sum(t.count for t in a.tokens) == a.composition.num_atoms


def test_comproportionation_and_sign_rules():
    # Fe2+ and Fe4+ would react to Fe3+: never allowed together.
    assert (2, 4) not in compatible_pairs("Fe")
    assert (2, 3) in compatible_pairs("Fe")
    for el in ["Fe", "S", "N", "Pb", "Mn"]:
        for lo, hi in compatible_pairs(el):
            assert (lo > 0) == (hi > 0)
            assert not any(lo < s < hi for s in allowed_states(el))
    for formula in ["Fe3O4", "Cu2ZnSnS4", "NH4Cl", "Mn3O4"]:
        a = label_valence(formula)
        signs = {}
        for t in a.tokens:
            signs.setdefault(t.element, set()).add(t.valence > 0)
        assert all(len(s) == 1 for s in signs.values())


def test_deterministic_and_fast_on_big_formulas():
    big = "LiNaMgAl2Si3O11"  # 19 atoms, 6 elements
    assert str(label_valence(big)) == str(label_valence(big))
    assert label_valence(big).charge == 0


def test_no_valid_assignment():
    with pytest.raises(NoValidAssignmentError, match="no charge-neutral"):
        label_valence("KO2")  # superoxide: O- is not an allowed state


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ("Xx2O", UnknownElementError, "Xx"),
        ("", FormulaError, "empty"),
        ("   ", FormulaError, "empty"),
        ("Fe3O4)", FormulaError, "malformed"),
        ("XeF2", UnknownElementError, "noble gas"),
        ("He", UnknownElementError, "noble gas"),
        ("Fe0.5O", FormulaError, "integers"),
    ],
)
def test_bad_input(bad, error, message):
    with pytest.raises(error, match=message):
        label_valence(bad)


def test_many_multivalent_elements():
    a = label_valence("LiMnFeCoNiCu2O8S5")  # 20 atoms, 7 elements, five of them multivalent
    assert a.charge == 0 and a.kind == "ionic"
