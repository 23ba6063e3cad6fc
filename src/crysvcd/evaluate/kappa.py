"""Lattice thermal conductivity (kappa_L) labels: phono3py with an MLIP as the force engine.

Recipe (per material):

1. The caller relaxes the structure tightly first (``relax_for_kappa``: symmetry kept,
   fmax ~ 2e-3 eV/A). Residual forces are subtracted from every displaced supercell, but
   a loose relaxation still shifts the harmonic frequencies, and kappa follows them.
2. Supercells: the smallest diagonal multiple of the given cell or of its conventional
   cell whose three perpendicular widths reach ``supercell_min_length`` (fc3), and
   optionally a larger one for fc2 (``fc2_supercell_min_length``).
3. Displacements: phono3py's symmetry-reduced finite-difference pairs when there are at
   most ``max_fd_supercells`` of them; otherwise +/- pairs of random snapshots (every atom
   moved by ``displacement``) fitted by symfc, which needs far fewer supercells for
   low-symmetry cells.
4. Force constants: the finite-difference route is symmetrised afterwards (translational
   and permutation invariance); symfc returns symmetry-projected constants directly.
5. kappa from the relaxation-time approximation (RTA) on a q-mesh at ``temperatures``,
   with isotope scattering at natural abundance by default (``isotope=True``): experiments
   and the phononDB/kappa-103 references include it, and it lowers high-kappa solids such
   as Si by ~10 %. ``wigner=True`` adds the coherence term (Simoncelli-Marzari-Mauri), which
   matters only for kappa of order 1 W/mK and below.

Not included: non-analytical (LO-TO) corrections, since MLIPs give no Born charges; this
leaves polar materials' optical branches slightly off. Imaginary modes are not fixed: they
are reported (``min_frequency``) and such modes drop out of the phono3py sum.

Cost control: a material that would cost too much is not computed. ``KappaSkipped`` (a
RuntimeError with ``reason``) is raised before the expensive part when the supercell or the
number of snapshots exceeds the limits, or when the measured time per force call projects
past ``budget_s``. The RTA step itself cannot be interrupted once started; its cost grows
with (mesh points)^2 x (3 x atoms in the primitive cell)^3, so keep ``mesh`` modest for
cells with more than a few atoms.

Threads: phono3py's Rust kernels use rayon; export ``RAYON_NUM_THREADS`` (and
``OMP_NUM_THREADS``) to bound them on shared machines.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from pymatgen.core import Element, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crysvcd.evaluate.relax import RelaxResult, check_structure, relax

METHODS = ("finite-displacement", "symfc-random")


class KappaSkipped(RuntimeError):
    """The material was not computed because it would exceed a cost limit.

    ``reason`` says which limit; ``n_supercells`` and ``supercell_atoms`` describe the plan
    and ``seconds`` the time spent before giving up, so a caller can record the skip.
    """

    def __init__(
        self,
        reason: str,
        n_supercells: int | None = None,
        supercell_atoms: int | None = None,
        seconds: float = 0.0,
    ):
        super().__init__(reason)
        self.reason = reason
        self.n_supercells = n_supercells
        self.supercell_atoms = supercell_atoms
        self.seconds = seconds

    def as_dict(self) -> dict:
        return {
            "skipped": True,
            "reason": self.reason,
            "n_supercells": self.n_supercells,
            "supercell_atoms": self.supercell_atoms,
            "seconds": self.seconds,
        }


@dataclass
class KappaSettings:
    # K; one value or several (kappa is reported at the first one)
    temperatures: float | Sequence[float] = 300.0
    # q-mesh: a length l in A (N_i ~ l |b_i|, phono3py's automatic mesh) or three integers.
    # 60 gives 19x19x19 for Si (the phononDB/kappa-103 choice); 35 (11x11x11) is ~7 % low.
    mesh: float | Sequence[int] = 60.0
    # A: smallest perpendicular width of the fc3 supercell; 9 A gives 54-64 atoms for most
    # rocksalt/zincblende cells (128 for small-lattice ones such as SiC) and 72-128 for
    # wurtzite, enough for the short-ranged anharmonic constants
    supercell_min_length: float = 9.0
    # A: a larger fc2 supercell when set (harmonic constants are longer-ranged, and fc2
    # supercells are cheap: a handful of finite displacements)
    fc2_supercell_min_length: float | None = None
    displacement: float = 0.03  # A
    # above this many finite-difference supercells, switch to random snapshots + symfc
    max_fd_supercells: int = 300
    # random snapshots (total, counting each +/- pair as two) or None for
    # max(8 x symfc's minimum, 48), capped at max_random_snapshots
    n_random_snapshots: int | None = None
    max_random_snapshots: int = 200
    # A: drop fc3 pairs farther apart (both routes); None keeps all pairs in the supercell
    fc3_cutoff: float | None = None
    max_supercell_atoms: int = 200
    budget_s: float | None = 3600.0  # wall time per material, None for no limit
    isotope: bool = True
    wigner: bool = False
    symprec: float = 1e-4  # A, for the symmetry search of the (relaxed) input cell
    random_seed: int = 0

    def temperature_list(self) -> list[float]:
        temps = self.temperatures
        values = [float(temps)] if isinstance(temps, int | float) else [float(t) for t in temps]
        if not values or not all(math.isfinite(t) and t > 0 for t in values):
            raise ValueError(f"temperatures must be positive numbers, got {temps!r}")
        return values


@dataclass
class KappaPlan:
    method: str
    n_supercells: int  # fc3 supercells (fc2 ones counted in n_fc2_supercells)
    n_fc2_supercells: int  # extra supercells for a separate fc2 cell, else 0
    supercell_atoms: int
    fc2_supercell_atoms: int
    supercell_matrix: list[list[int]]
    fc2_supercell_matrix: list[list[int]]


@dataclass
class KappaResult:
    kappa: float  # W/mK, mean of the diagonal at the first temperature
    kappa_xx: float
    kappa_yy: float
    kappa_zz: float
    temperatures: list[float]
    kappa_per_temperature: list[float]  # mean of the diagonal at each temperature
    method: str
    n_supercells: int  # force calls on displaced supercells, fc2 ones included
    supercell_atoms: int
    mesh: list[int]
    seconds: float
    seconds_forces: float
    seconds_rta: float
    min_frequency: float  # THz over the mesh; below ~ -0.1 means an unstable structure
    supercell_matrix: list[list[int]] = field(default_factory=list)
    fc2_supercell_matrix: list[list[int]] = field(default_factory=list)

    @property
    def dynamically_stable(self) -> bool:
        return self.min_frequency > -0.1

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["dynamically_stable"] = self.dynamically_stable
        return out


# ---------------------------------------------------------------------------------------
# structure helpers


def relax_for_kappa(
    structure: Structure,
    calculator: Calculator,
    fmax: float = 2e-3,
    steps: int = 1000,
    timeout: float | None = None,
    symprec: float = 1e-3,
) -> RelaxResult:
    """Primitive cell, relaxed with its space group kept (ASE FixSymmetry), to ``fmax``.

    Keeping the symmetry matters twice: phono3py needs it to reduce the displacements, and a
    slightly broken cell multiplies their number. BFGS converges the tight ``fmax`` in far
    fewer steps than FIRE on these near-harmonic minima.
    """
    check_structure(structure)
    _check_elements(structure, calculator)
    primitive = SpacegroupAnalyzer(structure, symprec=symprec).find_primitive()
    return relax(primitive or structure, calculator, fmax, steps, "BFGS", timeout, symprec=symprec)


def _supported_numbers(calculator: Calculator) -> set[int] | None:
    """Atomic numbers the calculator knows, where it says so (SevenNet, EMT); else None."""
    type_map = getattr(calculator, "type_map", None)
    if isinstance(type_map, dict) and type_map:
        return {int(z) for z in type_map}
    if type(calculator).__name__ == "EMT":
        from ase.calculators.emt import parameters

        return {Element(symbol).Z for symbol in parameters}
    return None


def _check_elements(structure: Structure, calculator: Calculator) -> None:
    if not structure.is_ordered:
        raise ValueError(
            f"{structure.composition.reduced_formula}: partial occupancies; phonons need an "
            "ordered structure"
        )
    known = _supported_numbers(calculator)
    if known is None:
        return
    missing = sorted({el.symbol for el in structure.composition if el.Z not in known})
    if missing:
        raise ValueError(
            f"{structure.composition.reduced_formula}: the MLIP "
            f"({type(calculator).__name__}) has no parameters for element(s) "
            f"{', '.join(missing)}"
        )


def _forces(atoms: Atoms, calculator: Calculator, formula: str) -> np.ndarray:
    atoms.calc = calculator
    try:
        forces = np.array(atoms.get_forces(), dtype=float)
    except (KeyError, ValueError, NotImplementedError, IndexError) as exc:
        raise ValueError(
            f"{formula}: the MLIP ({type(calculator).__name__}) failed on this structure "
            f"({type(exc).__name__}: {exc}); is every element supported?"
        ) from exc
    if not np.isfinite(forces).all():
        raise ValueError(f"{formula}: the MLIP returned non-finite forces")
    return forces


def _perpendicular_widths(lattice: np.ndarray) -> np.ndarray:
    volume = abs(np.linalg.det(lattice))
    a, b, c = lattice
    areas = [np.linalg.norm(np.cross(b, c)), np.linalg.norm(np.cross(c, a))]
    areas.append(np.linalg.norm(np.cross(a, b)))
    return volume / np.array(areas)


def candidate_supercell_matrices(
    structure: Structure, min_length: float, symprec: float = 1e-4
) -> list[np.ndarray]:
    """Integer matrices S (phonopy convention) of supercells whose three perpendicular
    widths all reach ``min_length``: the smallest diagonal multiple of the cell itself and
    of its conventional cell, smallest first (ties: wider first).

    The conventional shape matters for fcc/bcc primitive cells: at equal width it is often
    not much larger and keeps the cubic point group, which cuts the displacements.
    """
    import spglib

    unit = np.array(structure.lattice.matrix)
    bases = [np.eye(3, dtype=int)]
    cell = (unit, structure.frac_coords, [site.specie.Z for site in structure])
    std = spglib.standardize_cell(cell, to_primitive=False, no_idealize=True, symprec=symprec)
    if std is not None:
        transform = np.array(std[0]) @ np.linalg.inv(unit)  # rows: conv = T @ unit
        rounded = np.rint(transform)
        if np.allclose(transform, rounded, atol=1e-3) and abs(np.linalg.det(rounded)) > 1.5:
            bases.append(rounded.astype(int))
    found = []
    for base in bases:
        widths = _perpendicular_widths(base @ unit)
        reps = np.maximum(1, np.ceil(min_length / widths - 1e-6)).astype(int)
        rows = np.diag(reps) @ base  # supercell rows = rows @ unit
        size = round(abs(np.linalg.det(rows)))
        width = float(_perpendicular_widths(rows @ unit).min())
        # phonopy's supercell_matrix acts on column vectors: (a' b' c') = (a b c) S
        found.append(((size, -width), np.array(rows.T, dtype=int)))
    found.sort(key=lambda item: item[0])
    return [matrix for _, matrix in found]


def choose_supercell_matrix(
    structure: Structure, min_length: float, symprec: float = 1e-4
) -> np.ndarray:
    """The smallest supercell matrix of ``candidate_supercell_matrices``."""
    return candidate_supercell_matrices(structure, min_length, symprec)[0]


def _phonopy_atoms(structure: Structure):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=[site.specie.symbol for site in structure],
        cell=np.array(structure.lattice.matrix),
        scaled_positions=np.array(structure.frac_coords),
    )


def _ase_atoms(cell) -> Atoms:
    return Atoms(
        symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True
    )


# ---------------------------------------------------------------------------------------
# plan: supercells and displacements, no force calls


def _setup(structure: Structure, settings: KappaSettings):
    """The cheapest admissible plan (force calls x supercell atoms) over the candidate fc3
    supercells, with its Phono3py object holding the displacements."""
    fc2_matrix = None
    if settings.fc2_supercell_min_length is not None:
        fc2_matrix = choose_supercell_matrix(
            structure,
            max(settings.fc2_supercell_min_length, settings.supercell_min_length),
            settings.symprec,
        )
    best, skips = None, []
    candidates = candidate_supercell_matrices(
        structure, settings.supercell_min_length, settings.symprec
    )
    for fc3_matrix in candidates:
        same = fc2_matrix is not None and np.array_equal(fc2_matrix, fc3_matrix)
        try:
            ph3, plan = _setup_one(structure, settings, fc3_matrix, None if same else fc2_matrix)
        except KappaSkipped as skip:
            skips.append(skip)
            continue
        # finite differences first (symfc fits from a few dozen random snapshots came out
        # 5-15 % low for Si with 7net-0), then force calls x atoms
        cost = (
            plan.method != "finite-displacement",
            plan.n_supercells * plan.supercell_atoms
            + plan.n_fc2_supercells * plan.fc2_supercell_atoms,
        )
        if best is None or cost < best[0]:
            best = (cost, ph3, plan)
    if best is None:
        raise skips[0]
    return best[1], best[2]


def _setup_one(
    structure: Structure,
    settings: KappaSettings,
    fc3_matrix: np.ndarray,
    fc2_matrix: np.ndarray | None,
):
    from phono3py import Phono3py

    supercell_atoms = round(abs(np.linalg.det(fc3_matrix))) * len(structure)
    fc2_atoms = supercell_atoms
    if fc2_matrix is not None:
        fc2_atoms = round(abs(np.linalg.det(fc2_matrix))) * len(structure)
    if max(supercell_atoms, fc2_atoms) > settings.max_supercell_atoms:
        raise KappaSkipped(
            f"supercell of {max(supercell_atoms, fc2_atoms)} atoms exceeds "
            f"max_supercell_atoms={settings.max_supercell_atoms}",
            supercell_atoms=max(supercell_atoms, fc2_atoms),
        )
    # "auto" reduces a centred (conventional) input to its primitive cell for the q-mesh;
    # a primitive input is used as it is
    ph3 = Phono3py(
        _phonopy_atoms(structure),
        supercell_matrix=fc3_matrix,
        phonon_supercell_matrix=fc2_matrix,
        primitive_matrix="auto",
        symprec=settings.symprec,
        log_level=0,
    )
    ph3.generate_displacements(
        distance=settings.displacement, cutoff_pair_distance=settings.fc3_cutoff
    )
    n_fc3 = sum(cell is not None for cell in ph3.supercells_with_displacements)
    method = "finite-displacement"
    if n_fc3 > settings.max_fd_supercells:
        method = "symfc-random"
        n_fc3 = _random_snapshot_count(ph3, settings, supercell_atoms)
        ph3.generate_displacements(
            distance=settings.displacement,
            number_of_snapshots=n_fc3 // 2,
            is_plusminus=True,  # +/- pairs cancel the even-order error terms in the fit
            random_seed=settings.random_seed,
            cutoff_pair_distance=settings.fc3_cutoff,
        )
    n_fc2 = 0
    if fc2_matrix is not None:
        ph3.generate_fc2_displacements(distance=settings.displacement, is_plusminus="auto")
        n_fc2 = len(ph3.phonon_supercells_with_displacements)
    plan = KappaPlan(
        method=method,
        n_supercells=n_fc3,
        n_fc2_supercells=n_fc2,
        supercell_atoms=supercell_atoms,
        fc2_supercell_atoms=fc2_atoms,
        supercell_matrix=fc3_matrix.tolist(),
        fc2_supercell_matrix=(fc3_matrix if fc2_matrix is None else fc2_matrix).tolist(),
    )
    return ph3, plan


def _random_snapshot_count(ph3, settings: KappaSettings, supercell_atoms: int) -> int:
    from phonopy.interface.symfc import SymfcFCSolver

    options = None if settings.fc3_cutoff is None else {"cutoff": {3: settings.fc3_cutoff}}
    minimum = SymfcFCSolver(ph3.supercell, symmetry=ph3.symmetry, options=options)
    minimum = int(minimum.estimate_numbers_of_supercells(orders=[3])[3])
    # 8 x symfc's minimum, at least 48: with fewer, force noise in the fit acts as extra
    # anharmonicity and lowers kappa (Si, 7net-0: 16 snapshots -15 %, 48 snapshots -5 %)
    wanted = settings.n_random_snapshots or max(8 * minimum, 48)
    wanted = max(wanted, minimum + 1)
    wanted += wanted % 2  # whole +/- pairs
    if minimum > settings.max_random_snapshots:
        raise KappaSkipped(
            f"symfc needs at least {minimum} random snapshots of {supercell_atoms} atoms, "
            f"more than max_random_snapshots={settings.max_random_snapshots}",
            n_supercells=minimum,
            supercell_atoms=supercell_atoms,
        )
    return min(wanted, settings.max_random_snapshots - settings.max_random_snapshots % 2)


def kappa_plan(structure: Structure, settings: KappaSettings | None = None) -> KappaPlan:
    """What ``lattice_thermal_conductivity`` would compute, without any force call.

    Raises ``KappaSkipped`` for a supercell or snapshot count over the limits, so a caller
    can filter candidates cheaply.
    """
    check_structure(structure)
    return _setup(structure, settings or KappaSettings())[1]


# ---------------------------------------------------------------------------------------
# the calculation


def lattice_thermal_conductivity(
    structure: Structure,
    calculator: Calculator,
    settings: KappaSettings | None = None,
) -> KappaResult:
    """kappa_L of a relaxed ``structure`` with ``calculator`` forces (phono3py, RTA).

    ``structure`` should be relaxed tightly with the same calculator (``relax_for_kappa``,
    fmax ~ 1e-3 to 3e-3 eV/A). Raises ValueError for bad input (NaN, non-periodic, an
    element the MLIP lacks) and ``KappaSkipped`` when a cost limit would be exceeded.
    """
    settings = settings or KappaSettings()
    start = time.perf_counter()
    check_structure(structure)
    _check_elements(structure, calculator)
    temperatures = settings.temperature_list()
    formula = structure.composition.reduced_formula
    # one single point on the unit cell: unsupported elements fail here, cheaply
    _forces(AseAtomsAdaptor.get_atoms(structure), calculator, formula)
    ph3, plan = _setup(structure, settings)
    budget = settings.budget_s

    def over_budget(n_done: int, n_total: int, per_call: float) -> None:
        if budget is None:
            return
        elapsed = time.perf_counter() - start
        projected = elapsed + (n_total - n_done) * per_call
        if projected > budget:
            raise KappaSkipped(
                f"projected {projected:.0f} s for {n_total} supercells of "
                f"{plan.supercell_atoms} atoms ({per_call:.2f} s per force call) exceeds "
                f"budget_s={budget:.0f}",
                n_supercells=n_total,
                supercell_atoms=plan.supercell_atoms,
                seconds=elapsed,
            )

    t_forces = time.perf_counter()
    n_total = plan.n_supercells + plan.n_fc2_supercells
    n_done, seconds_calls = 0, 0.0

    def forces_of(perfect, cells) -> np.ndarray:
        nonlocal n_done, seconds_calls
        # residual forces of the undisplaced supercell are subtracted: they are the
        # relaxation error, not a response to the displacement
        residual = _forces(_ase_atoms(perfect), calculator, formula)
        sets = np.zeros((len(cells), len(perfect), 3))
        for i, cell in enumerate(cells):
            if cell is None:  # pair beyond fc3_cutoff: phono3py ignores its forces
                continue
            t0 = time.perf_counter()
            sets[i] = _forces(_ase_atoms(cell), calculator, formula) - residual
            n_done += 1
            seconds_calls += time.perf_counter() - t0
            over_budget(n_done, n_total, seconds_calls / n_done)
        return sets

    ph3.forces = forces_of(ph3.supercell, ph3.supercells_with_displacements)
    if plan.n_fc2_supercells:
        ph3.phonon_forces = forces_of(
            ph3.phonon_supercell, ph3.phonon_supercells_with_displacements
        )
    seconds_forces = time.perf_counter() - t_forces

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _force_constants(ph3, plan, settings)

    t_rta = time.perf_counter()
    ph3.mesh_numbers = (
        float(settings.mesh)
        if isinstance(settings.mesh, int | float)
        else [int(n) for n in settings.mesh]
    )
    ph3.init_phph_interaction()
    rta_options = {"temperatures": temperatures, "is_isotope": settings.isotope, "log_level": 0}
    if settings.wigner:
        rta_options["transport_type"] = "SMM19"
    if budget is not None:
        # the RTA loop cannot be interrupted: time one of the costliest irreducible
        # q-points (lowest symmetry, largest star) and extrapolate before committing
        projected, n_ir = _rta_projection(ph3, rta_options)
        elapsed = time.perf_counter() - start
        if elapsed + projected > budget:
            raise KappaSkipped(
                f"RTA on the {'x'.join(map(str, ph3.mesh_numbers))} mesh ({n_ir} irreducible "
                f"q-points) projected at {projected:.0f} s after {elapsed:.0f} s exceeds "
                f"budget_s={budget:.0f}",
                n_supercells=n_done,
                supercell_atoms=plan.supercell_atoms,
                seconds=elapsed,
            )
    ph3.run_thermal_conductivity(**rta_options)
    seconds_rta = time.perf_counter() - t_rta
    tensor = _kappa_tensor(ph3, settings.wigner)  # (temperatures, 6) in W/mK
    if not np.isfinite(tensor).all():
        raise RuntimeError(f"{formula}: phono3py returned a non-finite kappa")
    ph3.run_phonon_solver()  # every grid point (a no-op when done), so no mode is missed
    frequencies = ph3.get_phonon_data()[0]
    diag = tensor[:, :3]
    return KappaResult(
        kappa=float(diag[0].mean()),
        kappa_xx=float(diag[0, 0]),
        kappa_yy=float(diag[0, 1]),
        kappa_zz=float(diag[0, 2]),
        temperatures=temperatures,
        kappa_per_temperature=[float(v) for v in diag.mean(axis=1)],
        method=plan.method,
        n_supercells=n_done,
        supercell_atoms=plan.supercell_atoms,
        mesh=[int(n) for n in ph3.mesh_numbers],
        seconds=time.perf_counter() - start,
        seconds_forces=seconds_forces,
        seconds_rta=seconds_rta,
        min_frequency=float(np.min(frequencies)),
        supercell_matrix=plan.supercell_matrix,
        fc2_supercell_matrix=plan.fc2_supercell_matrix,
    )


def _rta_projection(ph3, rta_options: dict) -> tuple[float, int]:
    from phonopy.phonon.grid import get_ir_grid_points

    ph3.run_phonon_solver()
    ir_points, weights, _ = get_ir_grid_points(ph3.grid)
    probe = int(ph3.grid.grg2bzg[ir_points[int(np.argmax(weights))]])
    t0 = time.perf_counter()
    ph3.run_thermal_conductivity(grid_points=[probe], **rta_options)
    return (time.perf_counter() - t0) * len(ir_points), len(ir_points)


def _force_constants(ph3, plan: KappaPlan, settings: KappaSettings) -> None:
    if plan.method == "symfc-random":
        options = None if settings.fc3_cutoff is None else f"cutoff={settings.fc3_cutoff}"
        # with a separate fc2 cell, fc2 is fitted below from its own finite displacements;
        # the "|" form keeps the cutoff for fc3 only
        ph3.produce_fc3(
            fc_calculator="symfc",
            fc_calculator_options=None if options is None else f"|{options}",
        )
    else:
        ph3.produce_fc3()
        ph3.symmetrize_fc3()
        if plan.n_fc2_supercells == 0:
            ph3.symmetrize_fc2()
    if plan.n_fc2_supercells:
        ph3.produce_fc2()
        ph3.symmetrize_fc2()


def _kappa_tensor(ph3, wigner: bool) -> np.ndarray:
    conductivity = ph3.thermal_conductivity
    if wigner and getattr(conductivity, "kappa_intra", None) is None:
        raise RuntimeError("phono3py did not run the Wigner (SMM19) transport variant")
    # (sigmas, temperatures, 6): one sigma (tetrahedron method); with SMM19 this is the
    # total, particle-like plus coherence
    return np.asarray(conductivity.kappa)[0]
