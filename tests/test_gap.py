import numpy as np
import pandas as pd

from crysvcd.evaluate import gap
from crysvcd.evaluate.trees import Trees
from crysvcd.loop.figures import usable_values
from crysvcd.loop.targets import Target


def test_the_shipped_classifier_calls_intermetallics_metals_and_oxides_not():
    p = gap.p_gapped(["Zr1Si1", "Co2Ru2C1", "Zr1C1", "Sr1Ti1O3", "Ti1O2", "Na1Cl1", ""])
    assert (p[:3] < gap.METAL_BELOW).all()
    assert (p[3:6] > 0.2).all() and np.isnan(p[6])
    assert list(gap.likely_metal(["Fe1As1", "Na1Cl1", ""])) == [True, False, False]


def test_materials_project_gaps_beat_the_classifier_where_the_pool_has_them():
    # ZrGeSb: gap 0 in every pool polymorph, though the classifier finds it gapped; VNiP:
    # gapped (0.04 eV) in MP, though the classifier calls it a metal
    formulas = ["Zr1 Ge1 Sb1", "V4 Ni4 P4", "Na1 Cl1"]
    p = gap.p_gapped(formulas)
    assert p[0] > gap.METAL_BELOW > p[1]
    assert list(gap.likely_metal(formulas)) == [True, False, False]
    assert gap.mp_gaps(["Zr3 Ge3 Sb3", "Zr5 Bi1 Sb4"])[0] == 0
    assert np.isnan(gap.mp_gaps(["Zr5 Bi1 Sb4"])[0])
    assert "Materials Project" in gap.why_metal("Zr1 Ge1 Sb1")
    assert "P(gap > 0)" in gap.why_metal("Fe1 As1")


def test_a_fit_on_a_tiny_pool_separates_what_it_was_shown():
    pairs = "Na Cl, K Br, Mg O, Ca O, Li F, Rb I, Sr S, Ba O, Cs Cl, K Cl, Li Cl, Na F"
    salts = [tuple(pair.split()) for pair in pairs.split(", ")]
    metals = ["Cu", "Fe", "Ni", "Ti", "Al", "Co", "Zn", "Cr", "V", "Mn", "Pd", "Pt"]
    pool = pd.DataFrame({
        "pretty_formula": [a + b for a, b in salts] + [m + n for m, n in zip(metals, metals[1:])],
        "cell_formula": [f"{a}1 {b}1" for a, b in salts]
        + [f"{m}1 {n}1" for m, n in zip(metals, metals[1:])],
        "band_gap": [5.0] * len(salts) + [0.0] * (len(metals) - 1),
    })  # fmt: skip
    model = gap.fit(pool)
    p = gap.p_gapped(["Na1 Br1", "Cu1 Ni1"], model)
    assert p[0] > 0.5 > p[1]
    # a row without a band gap (MPTS-52) is not a metal: it is left out
    assert model.trees.n_train == len(pool) and model.trees.n_hits == len(salts)
    unlabelled = pd.concat([pool, pool.head(1).assign(pretty_formula="X", band_gap=np.nan)])
    assert gap.fit(unlabelled).trees.n_train == len(pool)


def test_trees_are_the_fitted_model_after_a_save_and_a_load(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    x[rng.random(300) < 0.1, 1] = np.nan  # missing values take each node's learnt side
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) > 0).astype(int)
    trees = Trees.fit(x, y, ("a", "b", "c"), max_iter=30)
    trees.save(tmp_path / "t.npz")
    again = Trees.load(tmp_path / "t.npz")
    reference = HistGradientBoostingClassifier(max_iter=30, learning_rate=0.05, random_state=0)
    expected = reference.fit(x, y).decision_function(x)
    assert np.allclose(again.score(x), expected, atol=1e-8)
    assert again.features == ("a", "b", "c") and again.n_train == 300


def test_a_metals_dielectric_constant_is_not_counted():
    target = Target("dielectric", value=50.0)
    table = pd.DataFrame({"cell_formula": ["Zr1 Si1", "Sr1 Ti1 O3", "Cu1 Zn1"],
                          "kind": ["ionic", "ionic", "alloy"],
                          "dielectric_total": [116.7, 300.0, 80.0]})  # fmt: skip
    value = usable_values(table, target)
    assert np.isnan(value[0]) and value[1] == 300.0 and np.isnan(value[2])
