"""The learned screens (stability, a property): fit, rank, save, refuse bad input; used by
generate()."""

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition

from crysvcd.config import GenerateConfig
from crysvcd.evaluate.screen import (
    COMPOSITION_FEATURES,
    FEATURES,
    Screen,
    element_features,
    features,
    select,
)
from crysvcd.pipeline import generate

FORMULAS = ["NaCl", "MgO", "KBr", "CaO", "LiF", "ZnS", "BaTiO3", "SrTiO3", "LiFePO4",
            "Li2MnNiO4", "NaKMgCl4", "CsRbZnCdF6"]  # fmt: skip


def few_elements_screen() -> Screen:
    """A screen fitted on labels that say: binaries are stable, the rest are not."""
    x = np.stack([features(Composition(f), "ionic") for f in FORMULAS])
    y = np.array([len(Composition(f)) == 2 for f in FORMULAS], dtype=float)
    return Screen.fit(x, y)


def test_the_screen_learns_its_labels_and_reads_back(tmp_path):
    screen = few_elements_screen()
    assert (screen.n_train, screen.n_hits, screen.label) == (12, 6, "stable")
    x = np.stack([features(Composition(f), "ionic") for f in FORMULAS])
    scores = screen.score(x)
    binaries = np.array([len(Composition(f)) == 2 for f in FORMULAS])
    assert scores[binaries].min() > scores[~binaries].max()
    assert screen.weights[FEATURES.index("n_elements")] < 0
    screen.save(tmp_path / "s.json")
    again = Screen.load(tmp_path / "s.json")
    np.testing.assert_allclose(again.score(x), scores)


def test_descriptors_see_mixed_valence_and_hydrides():
    fe3o4 = features(Composition("Fe3O4"), "ionic", "Fe2+x1 Fe3+x2 O2-x4")
    lih = features(Composition("LiH"), "ionic", "Li+x1 H-x1")
    assert fe3o4[FEATURES.index("mixed_valence")] == 1.0
    assert lih[FEATURES.index("hydride")] == 1.0 and lih[FEATURES.index("mixed_valence")] == 0
    assert features(Composition("NaCl"), "ionic")[FEATURES.index("mp_formula_known")] == 1.0
    assert features(Composition("ArNe"), "alloy")[FEATURES.index("alloy")] == 1.0  # no X: ok


def test_select_prefers_distinct_formulas():
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    labels = ["A", "A", "B", "C", "A"]
    assert select(scores, labels, 3) == [0, 2, 3]  # the second A waits for the distinct ones
    assert select(scores, labels, 4) == [0, 1, 2, 3]


def test_bad_screens_are_refused(tmp_path):
    x = np.stack([features(Composition(f), "ionic") for f in FORMULAS])
    with pytest.raises(ValueError, match="both kinds"):
        Screen.fit(x, np.ones(len(FORMULAS)))
    with pytest.raises(ValueError, match="at least 10"):
        Screen.fit(x[:4], np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(FileNotFoundError, match="no screen"):
        Screen.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"mean": [1]}')
    with pytest.raises(ValueError, match="not a screen"):
        Screen.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not given ones"):
        GenerateConfig(formulas=["NaCl"], screen=str(tmp_path / "bad.json"))
    few_elements_screen().save(tmp_path / "s.json")
    text = (tmp_path / "s.json").read_text().replace('"x_std"', '"frac:Xx"')
    (tmp_path / "odd.json").write_text(text)
    with pytest.raises(ValueError, match="unknown descriptors.*frac:Xx"):
        Screen.load(tmp_path / "odd.json")


def test_a_screen_saved_before_property_screens_still_loads(tmp_path):
    screen = few_elements_screen()
    screen.save(tmp_path / "s.json")
    old = (tmp_path / "s.json").read_text().replace('"n_hits"', '"n_stable"')
    (tmp_path / "old.json").write_text(old.replace('  "label": "stable",\n', ""))
    again = Screen.load(tmp_path / "old.json")
    assert (again.n_hits, again.label) == (6, "stable")


def test_a_property_screen_reads_element_fractions(tmp_path):
    """Titanates and niobates are the hits: only the element fractions can tell."""
    formulas = ["SrTiO3", "BaTiO3", "CaTiO3", "KNbO3", "NaNbO3", "PbTiO3",
                "SrZrO3", "BaZrO3", "CaSnO3", "KTaO3", "MgSiO3", "BaSnO3"]  # fmt: skip
    y = np.array([f.endswith(("TiO3", "NbO3")) for f in formulas], dtype=float)
    names = COMPOSITION_FEATURES + element_features(formulas)
    assert "frac:Ti" in names and "alloy" not in names and "frac:Eu" not in names
    x = np.stack([features(Composition(f), "ionic", "", names) for f in formulas])
    assert x[0, names.index("frac:Ti")] == pytest.approx(0.2)
    screen = Screen.fit(x, y, names, "dielectric_high")
    screen.save(tmp_path / "p.json")
    again = Screen.load(tmp_path / "p.json")
    assert again.label == "dielectric_high" and again.features == names
    # a formula with an element it never saw scores by its other descriptors
    new = [Composition("SrTiO3"), Composition("SrHfO3"), Composition("EuTiO3")]
    scores = again.score(np.stack([again.descriptors(c, "ionic") for c in new]))
    assert scores[0] > scores[1] and scores[2] > scores[1]


def test_generate_keeps_the_formulas_the_screen_rates_best(tiny_run, tmp_path):
    from crysvcd.stage1.sample import load_sampler

    ckpt, _ = tiny_run
    few_elements_screen().save(tmp_path / "screen.json")
    cfg = GenerateConfig(n=6, ionic_fraction=1.0, steps=5, stage2=str(ckpt / "best.pt"),
                         screen=str(tmp_path / "screen.json"), screen_factor=4)  # fmt: skip
    generate(cfg, tmp_path / "out", progress=False)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    # the same 24 draws as generate's Stage I, scored by hand
    drawn, _ = load_sampler(None, "ionic").sample(
        24, 1.0, seed=0, conditions=[], constrained=True, neutral_only=True
    )
    screen = Screen.load(tmp_path / "screen.json")
    x = np.stack([features(f.composition, "ionic", f.valence_string()) for f in drawn])
    scores = screen.score(x)
    chosen = select(scores, [f.cell_formula for f in drawn], 6)
    assert list(summary["valence_tokens"]) == [drawn[i].valence_string() for i in chosen]
    np.testing.assert_allclose(summary["screen_score"], scores[chosen], atol=1e-3)
    assert summary["screen_score"].min() >= np.median(scores)
    # a screen that cannot be read stops generate() before anything is written
    cfg.screen = str(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError):
        generate(cfg, tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists()


def test_novel_formulas_are_not_mp_entries(tmp_path):
    from crysvcd.metrics import mp_formula_known
    from crysvcd.pipeline import plan

    few_elements_screen().save(tmp_path / "screen.json")
    for screen in (None, str(tmp_path / "screen.json")):
        cfg = GenerateConfig(n=10, ionic_fraction=0.5, novel_formulas=True, screen_factor=4,
                             screen=screen)  # fmt: skip
        items = plan(cfg)
        assert len(items) == 10
        assert not any(mp_formula_known(it.composition) for it in items)
    with pytest.raises(ValueError, match="not given ones"):
        GenerateConfig(formulas=["NaCl"], novel_formulas=True)


def test_a_dielectric_screen_keeps_only_formulas_the_surrogate_can_count(tmp_path):
    from crysvcd.evaluate.gap import blockers
    from crysvcd.pipeline import plan

    why = blockers("dielectric", ["Sr1 Ti1 O3", "Eu1 Ti1 O3", "Zr1 C1", "Zr1 Ge1 Sb1"])
    assert why[0] == "" and why[1].startswith("unseen element: Eu")
    assert why[2].startswith("likely a metal") and why[3].startswith("a metal in Materials")
    few_elements_screen().save(tmp_path / "screen.json")
    cfg = GenerateConfig(n=20, ionic_fraction=1.0, screen=str(tmp_path / "screen.json"),
                         screen_factor=4)  # fmt: skip
    plain = plan(cfg)
    cfg.screen_label = "dielectric"
    usable = plan(cfg)
    assert len(usable) == 20 and not any(blockers("dielectric", [it.label for it in usable]))
    assert any(blockers("dielectric", [it.label for it in plain]))  # the rule dropped some
    with pytest.raises(ValueError, match="screen_label must be one of"):
        GenerateConfig(screen_label="kappa")
    with pytest.raises(ValueError, match="no composition rules"):
        blockers("kappa", ["Si1"])
