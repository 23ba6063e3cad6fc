import math

import numpy as np
import pytest
import torch
from pymatgen.core import Composition, Structure

from crysvcd.config import Stage2Config
from crysvcd.stage2.batch import Crystal, collate, fully_connected_edges
from crysvcd.stage2.cspnet import CSPNet, load_model
from crysvcd.stage2.sample import SamplerSettings, StructureSampler, timestep_schedule
from crysvcd.stage2.schedules import Schedules, wrapped_normal_score

from .conftest import TINY_STAGE2 as TINY


def crystal(seed=0, n=5):
    rng = np.random.default_rng(seed)
    lattice = np.diag([4.0, 5.0, 6.0]) + rng.normal(0, 0.3, (3, 3))
    return Crystal(
        rng.integers(1, 30, n), rng.random((n, 3)).astype(np.float32), lattice.astype(np.float32)
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CSPNet(Stage2Config(**TINY)).eval()


def outputs(model, c, t=10):
    b = collate([c])
    return model(torch.tensor([t]), b.frac, b.lattice, b)


def test_permutation_equivariance(model):
    c = crystal()
    perm = np.array([3, 0, 4, 1, 2])
    cp = Crystal(c.atom_types[perm], c.frac[perm], c.lattice)
    l1, x1 = outputs(model, c)
    l2, x2 = outputs(model, cp)
    torch.testing.assert_close(l1, l2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(x1[perm], x2, atol=1e-5, rtol=1e-4)


def test_periodic_translation_invariance(model):
    c = crystal()
    shifted = Crystal(
        c.atom_types, np.mod(c.frac + [0.37, 0.81, 0.05], 1.0).astype(np.float32), c.lattice
    )
    l1, x1 = outputs(model, c)
    l2, x2 = outputs(model, shifted)
    torch.testing.assert_close(l1, l2, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(x1, x2, atol=1e-4, rtol=1e-3)


def test_rotation_equivariance(model):
    c = crystal()
    a, b = 0.7, 1.9
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rot = (rz @ rx).astype(np.float32)
    rotated = Crystal(c.atom_types, c.frac, c.lattice @ rot.T)  # rows are lattice vectors
    l1, x1 = outputs(model, c)
    l2, x2 = outputs(model, rotated)
    torch.testing.assert_close(l1 @ torch.from_numpy(rot.T), l2, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(x1, x2, atol=1e-4, rtol=1e-3)


def test_wrapped_normal_score_matches_finite_difference():
    sigma = torch.tensor([0.05, 0.3, 0.5], dtype=torch.float64)
    x = torch.tensor([0.02, -0.4, 0.45], dtype=torch.float64)
    k = torch.arange(-10, 11, dtype=torch.float64)

    def logp(v):
        return torch.logsumexp(-((v[:, None] + k) ** 2) / (2 * sigma[:, None] ** 2), -1)

    h = 1e-6
    fd = (logp(x + h) - logp(x - h)) / (2 * h)
    torch.testing.assert_close(wrapped_normal_score(x, sigma), fd, atol=1e-4, rtol=1e-4)
    s = Schedules(100, 0.005, 0.5)
    assert s.alphas_bar[1] > 0.99 and s.alphas_bar[-1] < 0.01
    assert torch.isclose(s.sigmas[1], torch.tensor(0.005)) and torch.isclose(
        s.sigmas[-1], torch.tensor(0.5)
    )


def test_edges_are_within_crystals():
    e = fully_connected_edges(torch.tensor([2, 3]))
    assert e.shape == (2, 2 + 6)
    assert all((s < 2) == (d < 2) for s, d in e.T.tolist())


def test_training_loss_falls_and_checkpoints(tiny_run):
    out, result = tiny_run
    hist = result.history
    assert np.mean([h["train_loss"] for h in hist[-2:]]) < hist[0]["train_loss"]
    assert (out / "best.pt").exists() and (out / "last.pt").exists()
    assert (out / "ema_epoch0001.pt").exists()


def test_sampling_gives_structures_of_the_composition(tiny_run):
    out, _ = tiny_run
    sampler = StructureSampler(load_model(out / "best.pt"))
    comps = [Composition("NaCl"), Composition("Fe2O3")]
    for settings in (SamplerSettings(steps=50), SamplerSettings(steps=10, corrector=False)):
        structures = sampler.sample(comps, settings, seed=0)
        assert [s.composition.reduced_formula for s in structures] == ["NaCl", "Fe2O3"]
        assert all(
            isinstance(s, Structure) and np.isfinite(s.frac_coords).all() for s in structures
        )
    again = sampler.sample(comps, SamplerSettings(steps=10), seed=0)
    first = sampler.sample(comps, SamplerSettings(steps=10), seed=0)
    np.testing.assert_allclose(again[0].frac_coords, first[0].frac_coords)
    with pytest.raises(ValueError, match="more than the model's 20"):
        sampler.sample([Composition("Na11Cl11")])


def test_bf16_sampling_follows_fp32(tiny_run):
    """bf16 autocast changes the network's rounding, not the sampler: one network call is
    within bf16 error of fp32, and a whole sampling run gives finite structures of the
    same compositions. An unknown precision is refused before any work."""
    out, _ = tiny_run
    sampler = StructureSampler(load_model(out / "best.pt"))
    b = collate([crystal(1), crystal(2, n=3)])
    t = torch.tensor([400, 30])
    fp32 = sampler._net(t, b.frac, b.lattice, b, None, "fp32")
    bf16 = sampler._net(t, b.frac, b.lattice, b, None, "bf16")
    for x, y in zip(fp32, bf16):
        assert y.dtype == torch.float32 and not torch.equal(x, y)  # bf16 did run
        assert (x - y).abs().max() < 0.05 * x.abs().max() + 1e-3
    comps = [Composition("NaCl"), Composition("Fe2O3")]
    structures = sampler.sample(comps, SamplerSettings(steps=20, precision="bf16"), seed=0)
    assert [s.composition.reduced_formula for s in structures] == ["NaCl", "Fe2O3"]
    assert all(np.isfinite(s.frac_coords).all() for s in structures)
    with pytest.raises(ValueError, match="precision must be one of"):
        SamplerSettings(precision="fp16")


def louder_after_first_draw(monkeypatch) -> list:
    """Make every torch.randn draw after the first (the starting lattice) five times larger;
    returns the call log, which a caller clears to start counting again."""
    randn, calls = torch.randn, []

    def louder(*args, **kwargs):
        calls.append(1)
        return randn(*args, **kwargs) * (1.0 if len(calls) == 1 else 5.0)

    monkeypatch.setattr(torch, "randn", louder)
    return calls


def test_eta_zero_predictor_ignores_fresh_noise(tiny_run, monkeypatch):
    """eta = 0 without corrector: after the starting lattice, the noise drawn at each step
    must not matter (DDIM-style). Scaling every later draw changes eta = 1, not eta = 0."""
    out, _ = tiny_run
    sampler = StructureSampler(load_model(out / "best.pt"))
    comps = [Composition("NaCl"), Composition("GaN")]
    ddim = SamplerSettings(steps=10, corrector=False, eta=0.0)
    ancestral = SamplerSettings(steps=10, corrector=False)
    plain = [sampler.sample(comps, s, seed=3) for s in (ddim, ancestral)]

    calls = louder_after_first_draw(monkeypatch)
    loud = sampler.sample(comps, ddim, seed=3)
    calls.clear()
    loud_ancestral = sampler.sample(comps, ancestral, seed=3)
    for a, b in zip(plain[0], loud):
        np.testing.assert_allclose(a.lattice.matrix, b.lattice.matrix, rtol=1e-5, atol=1e-5)
    assert not np.allclose(plain[1][0].lattice.matrix, loud_ancestral[0].lattice.matrix)
    with pytest.raises(ValueError, match="eta"):
        SamplerSettings(eta=1.5)


def test_zero_temperature_predictor_ignores_fresh_noise(tiny_run, monkeypatch):
    """temperature = 0 without corrector removes every fresh draw after the starting noise,
    whatever their size; anti-annealing moves the coordinates but keeps the composition."""
    out, _ = tiny_run
    sampler = StructureSampler(load_model(out / "best.pt"))
    comps = [Composition("NaCl"), Composition("GaN")]
    cold = SamplerSettings(steps=10, corrector=False, temperature=0.0)
    plain = sampler.sample(comps, cold, seed=3)
    boosted = sampler.sample(comps, SamplerSettings(steps=10, anti_anneal=5.0), seed=3)
    default = sampler.sample(comps, SamplerSettings(steps=10), seed=3)
    assert not np.allclose(boosted[0].frac_coords, default[0].frac_coords)
    assert [s.composition for s in boosted] == [s.composition for s in default]

    louder_after_first_draw(monkeypatch)
    loud = sampler.sample(comps, cold, seed=3)
    for a, b in zip(plain, loud):
        np.testing.assert_allclose(a.lattice.matrix, b.lattice.matrix, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a.frac_coords, b.frac_coords, atol=1e-5)
    for bad in ({"anti_anneal": -1.0}, {"temperature": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplerSettings(**bad)


def test_timestep_schedule():
    assert timestep_schedule(1000, 1000)[:3] == [1000, 999, 998]
    ts = timestep_schedule(1000, 50)
    assert ts[0] == 1000 and ts[-1] == 1 and len(ts) == 50
    with pytest.raises(ValueError):
        timestep_schedule(1000, 0)
