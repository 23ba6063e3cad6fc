import numpy as np
import pandas as pd

from crysvcd.evaluate import gap
from crysvcd.loop.figures import usable_values
from crysvcd.loop.targets import Target


def test_the_shipped_classifier_calls_intermetallics_metals_and_oxides_not():
    p = gap.p_gapped(["Zr1Ti1Sb1", "Co2Ru2C1", "Sr1Ti1O3", "Ti1O2", "Na1Cl1", ""])
    assert p[0] < gap.METAL_BELOW and p[1] < gap.METAL_BELOW
    assert (p[2:5] > 0.3).all() and np.isnan(p[5])
    assert list(gap.likely_metal(["Zr1Ti1Sb1", "Na1Cl1"])) == [True, False]


def test_a_fit_on_a_tiny_pool_separates_what_it_was_shown():
    pool = pd.DataFrame({
        "pretty_formula": ["NaCl", "KBr", "MgO", "CaO", "LiF", "Cu", "Fe", "Ni3Al", "CuZn",
                           "Ti", "Al", "FeNi"],
        "cell_formula": ["Na1 Cl1", "K1 Br1", "Mg1 O1", "Ca1 O1", "Li1 F1", "Cu1", "Fe1",
                         "Ni3 Al1", "Cu1 Zn1", "Ti1", "Al1", "Fe1 Ni1"],
        "band_gap": [5.0, 4.0, 4.5, 3.6, 8.7, 0, 0, 0, 0, 0, 0, 0],
    })  # fmt: skip
    model = gap.fit(pool)
    p = gap.p_gapped(["Na1 Br1", "Cu1 Ni1"], model)
    assert p[0] > 0.5 > p[1]


def test_a_metals_dielectric_constant_is_not_counted():
    target = Target("dielectric", value=50.0)
    table = pd.DataFrame({"cell_formula": ["Zr1 Ti1 Sb1", "Sr1 Ti1 O3", "Cu1 Zn1"],
                          "kind": ["ionic", "ionic", "alloy"],
                          "dielectric_total": [116.7, 300.0, 80.0]})  # fmt: skip
    value = usable_values(table, target)
    assert np.isnan(value[0]) and value[1] == 300.0 and np.isnan(value[2])
