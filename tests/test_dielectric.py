import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from pymatgen.core import DummySpecies, Lattice, Molecule, Structure

from crysvcd import checkpoints
from crysvcd.config import FitConfig
from crysvcd.datasets import structure_from_cif
from crysvcd.dielectric import predict_dielectric, predict_log_dielectric
from crysvcd.dielectric.data import load_frame, split_of, structure_graph
from crysvcd.dielectric.model import DielectricConfig, DielectricNet
from crysvcd.dielectric.train import train

TINY = dict(
    hidden_irreps="8x0e + 2x1o + 2x1e + 1x2e", n_layers=2, n_basis=6, radial_hidden=8,
    readout_hidden=8,
)  # fmt: skip
TINY_FIT = FitConfig(batch_size=4, lr=1e-2, min_lr=1e-2, ema_decay=0.5, max_epochs=15)


def rocksalt(a: float = 5.64) -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


@pytest.fixture(scope="module")
def frame():
    return load_frame()


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return DielectricNet(DielectricConfig(**TINY)).eval()


def test_split_is_deterministic_and_filtered(frame):
    assert frame.attrs["n_dropped"] == 0 and (frame["poly_total"] >= 1).all()
    assert split_of("mp-149") == split_of("mp-149")
    counts = frame["split"].value_counts()
    assert set(counts.index) == {"train", "val", "test"}
    assert counts["train"] > 7 * counts["test"]


def test_tiny_model_trains_and_resumes(frame, tmp_path):
    small = frame[(frame["nsites"] <= 6) & (frame["split"] == "train")]
    data = small.sample(16, random_state=0).reset_index(drop=True)
    data["split"] = ["train"] * 12 + ["val"] * 4
    res = train(DielectricConfig(**TINY), tmp_path, TINY_FIT, data)
    losses = [h["train_loss"] for h in res.history]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2])
    for name in ("run.json", "best.pt", "last.pt", "log.jsonl"):
        assert (tmp_path / name).exists()
    assert json.loads((tmp_path / "run.json").read_text())["n_train"] == 12
    more = train(DielectricConfig(**TINY), tmp_path, replace(TINY_FIT, max_epochs=16), data)
    assert more.epochs == 16 and len(more.history) == 16


def test_rotation_translation_permutation_invariance(frame, tiny_model):
    s = structure_from_cif(frame[frame["nsites"].between(4, 8)]["cif"].iloc[0])
    a, b, c = 0.7, 1.9, -0.4
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    rot = rz @ rx @ ry
    perm = np.random.default_rng(0).permutation(len(s))
    moved = Structure(
        Lattice(s.lattice.matrix @ rot.T),
        [s.species[i] for i in perm],
        np.mod(s.frac_coords[perm] + [0.31, 0.07, 0.55], 1.0),
    )
    p = predict_log_dielectric([s, moved], tiny_model, allow_unseen_elements=True)
    assert np.isfinite(p).all()
    assert abs(p[0] - p[1]) < 1e-5
    # equivariant (not just invariant) hidden features: a mirror image gives the same scalar
    mirror = Structure(Lattice(s.lattice.matrix * [[-1, 1, 1]]), s.species, s.frac_coords)
    q = predict_log_dielectric([mirror], tiny_model, allow_unseen_elements=True)
    assert abs(q[0] - p[0]) < 1e-5


def test_shipped_checkpoint_predicts_nacl():
    shipped = checkpoints.shipped("dielectric")
    assert shipped.exists()
    eps = predict_dielectric([rocksalt()])
    assert eps.shape == (1,) and np.isfinite(eps).all()
    assert 1.0 < eps[0] < 100.0
    side = json.loads(shipped.with_suffix(".json").read_text())
    assert side["config"]["cutoff"] > 0 and side["history"]


def test_bad_input_errors(tiny_model):
    s = rocksalt()
    frac = s.frac_coords.copy()
    frac[1, 0] = np.nan
    nan = Structure(s.lattice, s.species, frac)
    with pytest.raises(ValueError, match="non-finite"):
        predict_dielectric([nan], tiny_model)
    with pytest.raises(ValueError, match="non-periodic"):
        predict_dielectric([Molecule(["H", "H"], [[0, 0, 0], [0, 0, 0.74]])], tiny_model)
    sparse = Structure(Lattice.cubic(20.0), ["Na", "Cl"], [[0, 0, 0], [0.14, 0, 0]])
    with pytest.raises(ValueError, match="A\\^3/atom"):  # the one validity rule
        predict_dielectric([sparse], tiny_model)
    lonely = Structure(
        Lattice.cubic(9.6), ["Na", "Cl", "Ar"], [[0, 0, 0], [0.29, 0, 0], [0.5, 0.5, 0.5]]
    )
    with pytest.raises(ValueError, match="isolated atom: site 2"):
        predict_dielectric([lonely], tiny_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dummy = Structure(Lattice.cubic(3.0), [DummySpecies("X"), "Na"], [[0, 0, 0], [0.5] * 3])
    with pytest.raises(ValueError, match="unknown element"):
        structure_graph(dummy, 5.0)
    pu = Structure(Lattice.cubic(4.0), ["Pu", "O"], [[0, 0, 0], [0.5] * 3])
    with pytest.raises(ValueError, match="unknown element"):
        predict_dielectric([pu])  # the shipped model never saw Pu
    out = predict_dielectric([s, nan, lonely], tiny_model, errors="nan")
    assert np.isfinite(out[0]) and np.isnan(out[1:]).all()
