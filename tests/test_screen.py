"""The learned stability screen: fit, rank, save, refuse bad input; used by generate()."""

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition

from crysvcd.config import GenerateConfig
from crysvcd.evaluate.screen import FEATURES, StabilityScreen, features, select
from crysvcd.pipeline import generate

FORMULAS = ["NaCl", "MgO", "KBr", "CaO", "LiF", "ZnS", "BaTiO3", "SrTiO3", "LiFePO4",
            "Li2MnNiO4", "NaKMgCl4", "CsRbZnCdF6"]  # fmt: skip


def few_elements_screen() -> StabilityScreen:
    """A screen fitted on labels that say: binaries are stable, the rest are not."""
    x = np.stack([features(Composition(f), "ionic") for f in FORMULAS])
    y = np.array([len(Composition(f)) == 2 for f in FORMULAS], dtype=float)
    return StabilityScreen.fit(x, y)


def test_the_screen_learns_its_labels_and_reads_back(tmp_path):
    screen = few_elements_screen()
    assert (screen.n_train, screen.n_stable) == (12, 6)
    x = np.stack([features(Composition(f), "ionic") for f in FORMULAS])
    scores = screen.score(x)
    binaries = np.array([len(Composition(f)) == 2 for f in FORMULAS])
    assert scores[binaries].min() > scores[~binaries].max()
    assert screen.weights[FEATURES.index("n_elements")] < 0
    screen.save(tmp_path / "s.json")
    again = StabilityScreen.load(tmp_path / "s.json")
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
        StabilityScreen.fit(x, np.ones(len(FORMULAS)))
    with pytest.raises(ValueError, match="at least 10"):
        StabilityScreen.fit(x[:4], np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(FileNotFoundError, match="no stability screen"):
        StabilityScreen.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"mean": [1]}')
    with pytest.raises(ValueError, match="not a stability screen"):
        StabilityScreen.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not given ones"):
        GenerateConfig(formulas=["NaCl"], screen=str(tmp_path / "bad.json"))


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
    screen = StabilityScreen.load(tmp_path / "screen.json")
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
