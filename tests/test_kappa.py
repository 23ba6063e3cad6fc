"""kappa_L with phono3py, on EMT crystals small enough to run in seconds."""

import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from pymatgen.core import Lattice, Molecule, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crysvcd.evaluate.kappa import (
    RELAX_SYMPREC,
    KappaResult,
    lattice_thermal_conductivity,
    relax_for_kappa,
    symmetrize,
)
from crysvcd.evaluate.kappa_plan import KappaSkipped, kappa_plan, setup_phono3py
from crysvcd.evaluate.mlip import get_calculator
from crysvcd.evaluate.settings import KappaSettings
from crysvcd.evaluate.supercells import choose_supercell_matrix

# small and coarse on purpose: 36-atom supercells, 7x7x7 mesh
FAST = dict(supercell_min_length=6.0, mesh=[7, 7, 7], budget_s=120)


@pytest.fixture(scope="module")
def emt():
    return get_calculator("emt")


@pytest.fixture(scope="module")
def cuau(emt):
    """L1_0 CuAu (P4/mmm, 2 atoms), relaxed with EMT with its symmetry kept."""
    atoms = Atoms(
        "CuAu", cell=[2.8, 2.8, 3.7], scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], pbc=True
    )
    result = relax_for_kappa(AseAtomsAdaptor.get_structure(atoms), emt, fmax=1e-4)
    assert result.converged and result.fmax < 1e-4
    return result.structure


@pytest.fixture(scope="module")
def fd_result(cuau, emt):
    return lattice_thermal_conductivity(cuau, emt, KappaSettings(**FAST, temperatures=[300, 600]))


def test_relax_keeps_symmetry_and_reduces_to_primitive(cuau, emt):
    assert len(cuau) == 2
    assert SpacegroupAnalyzer(cuau).get_space_group_number() == 123
    assert cuau.lattice.c < 3.7  # EMT shrinks the c axis of this start
    conventional = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.7, cubic=True))
    relaxed = relax_for_kappa(conventional, emt, fmax=1e-4).structure
    assert len(relaxed) == 1
    assert relaxed.volume == pytest.approx(3.59**3 / 4, rel=0.02)  # EMT Cu, a = 3.59 A


def test_finite_displacement_kappa(fd_result, cuau):
    r = fd_result
    assert isinstance(r, KappaResult)
    assert r.method == "finite-displacement"
    assert 0.3 < r.kappa < 50 and math.isfinite(r.kappa)
    # tetragonal: xx = yy, zz different
    assert r.kappa_xx == pytest.approx(r.kappa_yy, rel=1e-6)
    assert abs(r.kappa_zz - r.kappa_xx) > 0.05 * r.kappa_xx
    assert r.kappa == pytest.approx((r.kappa_xx + r.kappa_yy + r.kappa_zz) / 3)
    plan = kappa_plan(cuau, KappaSettings(**FAST))
    assert r.n_supercells == plan.n_supercells > 10
    assert r.supercell_atoms == plan.supercell_atoms == 36
    assert r.mesh == [7, 7, 7] and r.grid_points == 343
    assert r.seconds >= r.seconds_forces + r.seconds_fit + r.seconds_rta > 0
    assert r.seconds_fit > 0
    assert r.dynamically_stable and r.min_frequency > -0.05
    # kappa ~ 1/T from umklapp scattering
    k300, k600 = r.kappa_per_temperature
    assert k300 == r.kappa and 1.6 < k300 / k600 < 2.4
    assert r.as_dict()["method"] == "finite-displacement"


def test_a_length_mesh_on_a_centred_cell_reads_as_counts_along_its_axes():
    """phono3py makes a generalized regular grid here; its mesh_numbers (1x2x336) are a
    Smith normal form, which reads like a broken mesh; the result gives the 8x7x6 grid."""
    from crysvcd.evaluate.kappa import _grid
    from crysvcd.evaluate.kappa_plan import setup_phono3py

    conventional = Structure(
        Lattice.orthorhombic(3.6, 4.1, 5.3),
        ["Cu", "Cu", "Au", "Au"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0, 0, 0.5], [0.5, 0.5, 0]],
    )
    primitive = SpacegroupAnalyzer(conventional).find_primitive()
    ph3, _ = setup_phono3py(primitive, KappaSettings(budget_s=None, supercell_min_length=6.0))
    ph3.mesh_numbers = 30.0  # A: 30 / 3.6, 30 / 4.1, 30 / 5.3 rounded
    assert sorted(ph3.mesh_numbers) != sorted([8, 7, 6])
    mesh, matrix, points = _grid(ph3)
    # the primitive zone holds twice the conventional one of a body-centred lattice
    assert sorted(mesh) == [6, 7, 8] and points == 8 * 7 * 6 * 2
    assert round(abs(np.linalg.det(matrix))) == points


def test_symfc_random_displacements_agree_with_finite_differences(fd_result, cuau, emt):
    settings = KappaSettings(**FAST, max_fd_supercells=0, n_random_snapshots=40)
    r = lattice_thermal_conductivity(cuau, emt, settings)
    assert r.method == "symfc-random"
    assert r.n_supercells == 40
    assert math.isfinite(r.kappa) and r.kappa > 0
    # EMT forces are noise-free, so the fit reproduces finite differences closely (0.3 %)
    assert 0.9 < r.kappa / fd_result.kappa < 1.1


class _Scaled(Calculator):
    """EMT with energy and forces times ``s``: every force constant scaled by ``s``."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, s: float):
        super().__init__()
        self.s = s

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        copy = atoms.copy()
        copy.calc = get_calculator("emt")
        energy, forces = copy.get_potential_energy(), copy.get_forces()
        self.results = {"energy": self.s * energy, "forces": self.s * forces}


@pytest.mark.parametrize("route", [{}, {"max_fd_supercells": 0, "n_random_snapshots": 40}])
def test_a_second_engine_gives_the_third_order_constants_alone(cuau, emt, route):
    # no isotope or coherence term: the RTA kappa is then exactly 1/|fc3|^2 at fixed fc2
    settings = KappaSettings(**FAST, isotope=False, wigner=False, **route)
    alone = lattice_thermal_conductivity(cuau, emt, settings)
    mixed = lattice_thermal_conductivity(cuau, emt, settings, fc3_calculator=_Scaled(2.0))
    assert mixed.n_supercells > alone.n_supercells  # fc2 from its own displacements
    # fc2 (so the dispersion) from ``emt``, fc3 from the doubled engine: kappa / 4
    assert mixed.min_frequency == pytest.approx(alone.min_frequency, abs=1e-6)
    assert mixed.kappa / alone.kappa == pytest.approx(0.25, rel=0.01 if not route else 0.1)


def test_cost_limits_give_a_recorded_skip(cuau, emt):
    with pytest.raises(KappaSkipped, match="max_supercell_atoms") as info:
        kappa_plan(cuau, KappaSettings(**{**FAST, "budget_s": None}, max_supercell_atoms=20))
    assert info.value.supercell_atoms == 36
    with pytest.raises(KappaSkipped, match="budget_s") as info:
        lattice_thermal_conductivity(cuau, emt, KappaSettings(**{**FAST, "budget_s": 1e-3}))
    skip = info.value.as_dict()
    assert skip["skipped"] and skip["n_supercells"] > 10 and "projected" in skip["reason"]
    with pytest.raises(KappaSkipped, match="max_random_snapshots"):
        kappa_plan(cuau, KappaSettings(**FAST, max_fd_supercells=0, max_random_snapshots=1))


def test_a_cell_symmetric_only_to_within_the_tolerance_is_symmetrized_first(emt):
    """A campaign's Th(TiGe)2 after its kappa relaxation: Immm at 1e-4 A, P-1 at 1e-5 A, and
    phono3py's displacement search stopped on "Site symmetry is broken" (a bare ValueError).
    Its geometry with EMT's elements fails the same way."""
    lattice = [[-4.07963319, 0.00036728, -0.00014645], [0.00026521, 4.08551459, 0.00027959],
               [-2.03950997, 2.04328844, -5.96890967]]  # fmt: skip
    frac = [[0.39029292, 0.89028549, 0.7194149], [0.60970708, 0.10971451, 0.2805851],
            [0.25011896, 0.25011718, 0.99975165], [0.74988104, 0.74988282, 0.00024835],
            [1.0, 0.5, 0.5]]  # fmt: skip
    cell = Structure(lattice, ["Cu", "Cu", "Ni", "Ni", "Au"], frac)
    settings = KappaSettings(supercell_min_length=6.0, mesh=[5, 5, 5], budget_s=None)
    with pytest.raises(ValueError):
        setup_phono3py(cell, settings)
    exact = symmetrize(cell, RELAX_SYMPREC)
    assert np.abs(exact.cart_coords - cell.cart_coords).max() < 1e-3
    assert SpacegroupAnalyzer(exact, symprec=1e-5).get_space_group_symbol() == "Immm"
    k = lattice_thermal_conductivity(cell, emt, settings)
    assert k.symmetrized and math.isfinite(k.kappa)
    assert not lattice_thermal_conductivity(exact, emt, settings).symmetrized


class _Refuses(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        raise KeyError("no model for Zr")


def test_imaginary_modes_send_fc2_to_a_wider_supercell_with_fc3_kept(fd_result, cuau, emt,
                                                                      monkeypatch):  # fmt: skip
    import crysvcd.evaluate.kappa as kappa

    assert fd_result.fc2_retry is None and not fd_result.fc2_retried  # stable: no retry
    # EMT's CuAu has no imaginary modes: a threshold above every frequency makes the real
    # phono3py route run (fc2 displacements in a wider cell, the first fc3, the RTA again)
    monkeypatch.setattr(kappa, "UNSTABLE_THZ", 1e3)
    settings = KappaSettings(**FAST, temperatures=[300, 600], fc2_retry_min_length=9.0)
    k = lattice_thermal_conductivity(cuau, emt, settings)
    assert k.fc2_retried and k.fc2_retry.startswith("fc2 from a supercell of")
    assert k.min_frequency_fc3_supercell == pytest.approx(fd_result.min_frequency, abs=1e-6)
    wider = abs(np.linalg.det(k.fc2_supercell_matrix))
    assert wider > abs(np.linalg.det(fd_result.fc2_supercell_matrix))
    assert k.n_supercells > fd_result.n_supercells
    # the same fc3 and a longer-ranged fc2 of a stiff metal: close, not identical
    assert k.kappa == pytest.approx(fd_result.kappa, rel=0.3) and k.kappa != fd_result.kappa
    tight = KappaSettings(**FAST, fc2_retry_min_length=9.0, fc2_retry_max_atoms=10)
    assert "fc2_retry_max_atoms=10" in lattice_thermal_conductivity(cuau, emt, tight).fc2_retry


def test_bad_input_gives_clear_errors(cuau, emt):
    bad = Structure(cuau.lattice, cuau.species, [[np.nan, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match="non-finite"):
        lattice_thermal_conductivity(bad, emt, KappaSettings(**FAST))
    with pytest.raises(ValueError, match="periodic"):
        lattice_thermal_conductivity(Molecule(["Cu", "Au"], [[0, 0, 0], [0, 0, 2.5]]), emt)
    fe_o = Structure(Lattice.cubic(4.2), ["Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match=r"element\(s\) Fe"):
        lattice_thermal_conductivity(fe_o, emt, KappaSettings(**FAST))
    with pytest.raises(ValueError, match="Fe"):
        relax_for_kappa(fe_o, emt)
    alloy = Structure(Lattice.cubic(3.7), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="ordered"):
        lattice_thermal_conductivity(alloy, emt, KappaSettings(**FAST))
    with pytest.raises(ValueError, match="no model for Zr"):
        lattice_thermal_conductivity(cuau, _Refuses(), KappaSettings(**FAST))
    with pytest.raises(ValueError, match="temperatures"):
        lattice_thermal_conductivity(cuau, emt, KappaSettings(**FAST, temperatures=[-5]))


def test_supercell_choice_reaches_the_minimum_width():
    cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.6))  # primitive, 1 atom
    matrix = choose_supercell_matrix(cu, 10.0)
    lattice = matrix.T @ cu.lattice.matrix
    volume = abs(np.linalg.det(lattice))
    widths = [volume / np.linalg.norm(np.cross(lattice[i - 2], lattice[i - 1])) for i in range(3)]
    assert min(widths) >= 10.0
    # the cubic 3x3x3 conventional shape (108 atoms) beats a 5x5x5 primitive one (125)
    assert round(abs(np.linalg.det(matrix))) == 108


def test_symfc_fits_fc3_within_the_cutoff(cuau, emt):
    from crysvcd.evaluate.kappa import _force_constants
    from crysvcd.evaluate.kappa_plan import setup_phono3py

    settings = KappaSettings(**FAST, max_fd_supercells=0, n_random_snapshots=20, fc3_cutoff=3.0)
    ph3, plan = setup_phono3py(cuau, settings)
    assert plan.method == "symfc-random"

    def forces(cell):
        atoms = Atoms(
            cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True
        )
        atoms.calc = emt
        return atoms.get_forces()

    perfect = forces(ph3.supercell)
    ph3.forces = np.array([forces(c) - perfect for c in ph3.supercells_with_displacements])
    _force_constants(ph3, plan, settings)
    # the cutoff reached symfc (an option string phono3py 4.10 does not split dropped it, and
    # the fit of a larger cell then asked for tens of GiB)
    assert ph3.fc3_cutoff == 3.0 and np.isfinite(ph3.fc3).all()


def test_wigner_total_adds_the_coherence_term(fd_result, cuau, emt):
    from crysvcd.loop.config import LoopConfig
    from crysvcd.loop.run import evaluate_config

    wigner = lattice_thermal_conductivity(
        cuau, emt, KappaSettings(**FAST, temperatures=[300, 600], wigner=True)
    )
    # the same force constants and mesh: the total is the particle part plus a coherence
    # term that is never negative and, for a simple metal cell, small
    assert wigner.kappa >= fd_result.kappa
    assert wigner.kappa == pytest.approx(fd_result.kappa, rel=0.2)
    # campaigns report the Wigner total, as benchmarks/kappa.py was checked
    assert evaluate_config(LoopConfig(), phonons=True, kappa=True).kappa_settings.wigner


def test_evaluate_kappa_defaults_are_the_checked_settings():
    from crysvcd.cli import _evaluate_config, build_parser
    from crysvcd.loop.config import LoopConfig

    # one set of kappa settings everywhere: crysvcd evaluate --kappa, the loop, the campaigns
    args = build_parser().parse_args(["evaluate", "RUN", "--kappa"])
    k = _evaluate_config(args).kappa_settings
    loop = LoopConfig()
    assert (k.supercell_min_length, k.fc3_cutoff, k.wigner) == (8.5, 4.5, True)
    assert (loop.kappa_supercell, loop.kappa_fc3_cutoff, loop.kappa_wigner) == (8.5, 4.5, True)
    args = build_parser().parse_args(
        ["evaluate", "RUN", "--kappa", "--kappa-fc3-cutoff", "none", "--no-kappa-wigner"]
    )
    k = _evaluate_config(args).kappa_settings
    assert k.fc3_cutoff is None and k.wigner is False


def test_the_fc3_mlip_reaches_the_kappa_step_from_the_cli_and_the_loop():
    from crysvcd.cli import _evaluate_config, build_parser
    from crysvcd.loop.config import LoopConfig
    from crysvcd.loop.run import evaluate_config

    args = build_parser().parse_args(["evaluate", "RUN", "--kappa"])
    assert _evaluate_config(args).kappa_fc3_mlip is None  # default: kappa_mlip's forces
    args = build_parser().parse_args(["evaluate", "RUN", "--kappa", "--kappa-fc3-mlip", "sevennet"])
    assert _evaluate_config(args).kappa_fc3_mlip == "sevennet"
    loop = LoopConfig(kappa_fc3_mlip="sevennet")
    assert evaluate_config(loop, phonons=True, kappa=True).kappa_fc3_mlip == "sevennet"
    with pytest.raises(ValueError, match="unknown kappa fc3 MLIP"):
        LoopConfig(kappa_fc3_mlip="vasp")
