"""The batched relaxation (torch-sim) against the ASE one, and its place in ``evaluate``.

The relaxer itself is tested on torch-sim's Lennard-Jones model against ASE's (a real,
tiny potential); ``evaluate --relax-batch`` needs a SevenNet model and runs where sevenn is
installed (CI installs it)."""

import warnings

import pytest
import torch
from ase.build import bulk
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crysvcd.evaluate.relax import RelaxationFailed, relax
from crysvcd.evaluate.runner import evaluate
from crysvcd.evaluate.settings import AUTO_RELAX_BATCH, EvaluateConfig, PhononSettings

pytest.importorskip("torch_sim")

SIGMA, EPSILON = 2.0, 0.01  # a toy argon: small enough that its cells pass geometry.check


def fcc(a: float) -> Structure:
    return Structure(
        Lattice.cubic(a), ["Ar"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    )


def lj_models():
    import torch
    from ase.calculators.lj import LennardJones
    from torch_sim.models.lennard_jones import LennardJonesModel

    cutoff = 2.6 * SIGMA
    batched = LennardJonesModel(sigma=SIGMA, epsilon=EPSILON, cutoff=cutoff, dtype=torch.float64,
                                compute_stress=True)  # fmt: skip
    return batched, LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=cutoff, smooth=False)


def test_batched_and_ase_relaxations_agree():
    from crysvcd.evaluate.batched import relax_batched

    model, calc = lj_models()
    strained = fcc(3.3)
    strained.perturb(0.03, 0)
    structures = [
        strained,
        fcc(3.0),
        Structure(Lattice.cubic(2.5), ["Ar"] * 2, [[0, 0, 0], [0.5] * 3]),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen: no electronegativity for Ar
        out = relax_batched(structures, model, fmax=0.001, steps=2000, max_atoms=6)
        for s, b in zip(structures, out):
            a = relax(s, calc, fmax=0.001, steps=2000)
            assert b.converged and a.converged and b.fmax < 0.001
            # ASE's LJ shifts each pair's energy to zero at the cutoff; compare both minima
            # under the one calculator
            e = [
                relax(x, calc, fmax=10.0, steps=1).energy / len(x)
                for x in (b.structure, a.structure)
            ]
            assert e[0] == pytest.approx(e[1], abs=1e-4)
            assert b.structure.volume == pytest.approx(a.structure.volume, rel=5e-3)


def test_a_collapsing_structure_fails_alone_in_its_batch():
    from crysvcd.evaluate.batched import relax_batched

    model, _ = lj_models()
    # one atom per 4.8 A cube: within reach of its images, it collapses to a tenth of its
    # volume, which the explosion guard counts as a failure
    dilute = Structure(Lattice.cubic(4.8), ["Ar"], [[0, 0, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = relax_batched([fcc(3.2), dilute, fcc(3.0)], model, fmax=0.001, steps=2000)
    assert isinstance(out[1], RelaxationFailed) and "tenfold" in str(out[1])
    assert out[0].converged and out[2].converged


def test_relax_batch_default_batches_on_a_gpu_only(monkeypatch):
    # on the CPU one at a time (measured: no faster through Dask); "cuda" without CUDA
    # runs on the CPU, so one at a time too
    assert EvaluateConfig().relax_batch == 1
    if not torch.cuda.is_available():
        assert EvaluateConfig(device="cuda").relax_batch == 1
    # batched on a GPU where the path applies
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert EvaluateConfig(device="auto").relax_batch == AUTO_RELAX_BATCH > 1
    assert EvaluateConfig(device="cuda").relax_batch == AUTO_RELAX_BATCH
    assert EvaluateConfig(device="cuda", mlip="sevennet-l3i5").relax_batch == AUTO_RELAX_BATCH
    assert EvaluateConfig(device="cuda", mlip="emt").relax_batch == 1
    assert EvaluateConfig(device="cuda", optimizer="BFGS").relax_batch == 1
    assert EvaluateConfig(device="cuda", relax_batch=1).relax_batch == 1  # ASE on request


def test_relax_batch_needs_a_sevennet_model():
    with pytest.raises(ValueError, match="relax_batch > 1 needs a SevenNet"):
        EvaluateConfig(mlip="emt", relax_batch=4)
    with pytest.raises(ValueError, match="FIRE, not BFGS"):
        EvaluateConfig(optimizer="BFGS", relax_batch=4)
    with pytest.raises(ValueError, match="relax_batch must be >= 1"):
        EvaluateConfig(relax_batch=0)
    with pytest.raises(ValueError, match="unknown device"):
        EvaluateConfig(device="tpu")


def test_evaluate_with_relax_batch_matches_one_at_a_time(tmp_path, dask_client):
    pytest.importorskip("sevenn")
    folder = tmp_path / "cifs"
    folder.mkdir()
    crystals = {"a_si": bulk("Si", "diamond", a=5.5), "b_nacl": bulk("NaCl", "rocksalt", a=5.5),
                "c_al": bulk("Al", "fcc", a=4.1)}  # fmt: skip
    for name, atoms in crystals.items():
        AseAtomsAdaptor.get_structure(atoms).to(filename=str(folder / f"{name}.cif"))
    tables = {}
    for batch in (1, 2):
        # phonons after the batched relaxation run on the ASE calculator in the same worker
        cfg = EvaluateConfig(mlip="sevennet", fmax=0.02, relax_steps=200, relax_batch=batch,
                             phonons=batch > 1, phonon=PhononSettings(supercell_min_length=6.0),
                             phonon_steps=50)  # fmt: skip
        tables[batch] = evaluate(folder, cfg, db=tmp_path / f"b{batch}.db", progress=False,
                                 client=dask_client).set_index("key")  # fmt: skip
    one, two = tables[1], tables[2]
    # the batched model is a copy: the ASE calculator of the same weights still works after
    from crysvcd.evaluate.mlip import get_calculator

    si = bulk("Si", "diamond", a=5.43)
    si.calc = get_calculator("sevennet")
    assert -12 < si.get_potential_energy() / len(si) < -4
    assert (two["status"] == "ok").all() and two["converged"].all()
    assert two["phonons_settings"].notna().all() and "phonon_error" not in two
    assert (two["e_above_hull"] - one["e_above_hull"]).abs().max() < 0.01
    # each structure's time counts its own relaxation and its phonons (an upper bound would
    # be a timing assertion: the phonon step's own tight relaxation and the load move it)
    assert (two["seconds"] >= two["relax_seconds"] + two["phonon_seconds"] - 0.05).all()
    # the same settings signature: a batched label is reused by an ASE run and vice versa
    assert (two["relax_settings"] == one["relax_settings"]).all()


def test_loop_labeller_groups_fresh_structures(tmp_path, dask_client):
    pytest.importorskip("sevenn")
    from crysvcd.evaluate.store import ResultStore
    from crysvcd.loop.config import LoopConfig
    from crysvcd.loop.run import Labeller

    cfg = LoopConfig(n=3, rounds=1, fmax=0.05, relax_steps=100, phonons=False, relax_batch=2)
    store = ResultStore(tmp_path / "labels.db")
    labeller = Labeller(dask_client, store, cfg, {"round": 0})
    crystals = [bulk("Si", "diamond", a=5.5), bulk("NaCl", "rocksalt", a=5.5), bulk("Al", a=4.1)]
    for i, atoms in enumerate(crystals):
        labeller.offer(f"r00/{i}", AseAtomsAdaptor.get_structure(atoms))
    # two are a full group and went at once; the third waits until the round collects
    assert len(labeller.waiting[True]) == 1
    assert sum(map(len, labeller.groups.values())) + labeller.finished == 2
    labeller.collect(block=True)
    rows = store.rows()
    assert labeller.finished == 3 and sorted(rows) == ["r00/0", "r00/1", "r00/2"]
    assert all(row.get("status") == "ok" and row.get("round") == 0 for row in rows.values())
