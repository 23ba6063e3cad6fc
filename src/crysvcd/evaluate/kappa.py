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

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crysvcd import geometry
from crysvcd.evaluate.kappa_plan import KappaPlan, KappaSettings, KappaSkipped, setup_phono3py
from crysvcd.evaluate.mlip import check_supported_elements
from crysvcd.evaluate.relax import RelaxResult, relax
from crysvcd.evaluate.supercells import (
    ase_atoms,
    choose_supercell_matrix,
    perpendicular_widths,
)


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
    # q-points along each axis; for a generalized regular grid (a length mesh on a centred
    # lattice) along the conventional axes, see ``_grid``
    mesh: list[int]
    seconds: float
    seconds_forces: float
    seconds_rta: float
    min_frequency: float  # THz over the mesh; below ~ -0.1 means an unstable structure
    supercell_matrix: list[list[int]] = field(default_factory=list)
    fc2_supercell_matrix: list[list[int]] = field(default_factory=list)
    grid_points: int = 0  # q-points in the whole grid
    grid_matrix: list[list[int]] = field(default_factory=list)
    # the force-constant fit, which the budget does not project (symfc's cost is known
    # only once it has run), so a fit that overruns is seen in the record
    seconds_fit: float = 0.0
    # symfc-random: snapshots over symfc's minimum (None for finite differences), how far
    # the fit is overdetermined (README, kappa: Si with 7net-l3i5 read 1.00-1.11x finite
    # differences at 2-8x, no trend)
    snapshots_per_minimum: float | None = None
    # the cell was symmetrized to RELAX_SYMPREC first: phono3py found its site symmetry
    # broken (a cell symmetric only to within the tolerance; Th(TiGe)2 of a campaign)
    symmetrized: bool = False
    # imaginary modes with fc2 from the fc3 supercell sent fc2 to a wider one
    # (``fc2_retry_min_length``): what happened (None: not needed), whether the value is
    # the wider one's, and the lowest frequency before
    fc2_retry: str | None = None
    fc2_retried: bool = False
    min_frequency_fc3_supercell: float | None = None

    @property
    def dynamically_stable(self) -> bool:
        return self.min_frequency > UNSTABLE_THZ

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["dynamically_stable"] = self.dynamically_stable
        return out


RELAX_SYMPREC = 1e-3  # A: the space group the kappa relaxation keeps
UNSTABLE_THZ = -0.1  # a lowest mesh frequency at or below this: imaginary modes, not noise


def relax_for_kappa(
    structure: Structure,
    calculator: Calculator,
    fmax: float = 2e-3,
    steps: int = 1000,
    timeout: float | None = None,
    symprec: float = RELAX_SYMPREC,
) -> RelaxResult:
    """Primitive cell, relaxed with its space group kept (ASE FixSymmetry), to ``fmax``.

    Keeping the symmetry matters twice: phono3py needs it to reduce the displacements, and a
    slightly broken cell multiplies their number. BFGS converges the tight ``fmax`` in far
    fewer steps than FIRE on these near-harmonic minima.
    """
    geometry.check(structure)
    check_supported_elements(structure, calculator)
    primitive = SpacegroupAnalyzer(structure, symprec=symprec).find_primitive()
    return relax(primitive or structure, calculator, fmax, steps, "BFGS", timeout, symprec=symprec)


def symmetrize(structure: Structure, symprec: float) -> Structure:
    """``structure`` with its atoms and cell on the exact symmetry of its space group at
    ``symprec`` (ASE's ``refine_symmetry``)."""
    from ase.spacegroup.symmetrize import refine_symmetry

    atoms = AseAtomsAdaptor.get_atoms(structure)
    refine_symmetry(atoms, symprec=symprec, verbose=False)
    return AseAtomsAdaptor.get_structure(atoms)


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


@dataclass
class _ForceSet:
    """The displaced supercells one engine computes, and what they have cost so far."""

    perfect: object  # PhonopyAtoms
    cells: list  # displaced supercells, None for a pair beyond the fc3 cutoff
    calc: Calculator
    residual: np.ndarray | None = None
    first_call: float = 0.0  # s, the undisplaced supercell
    done: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.n = sum(cell is not None for cell in self.cells)
        self.forces = np.zeros((len(self.cells), len(self.perfect), 3))

    @property
    def left(self) -> int:
        return self.n - self.done

    @property
    def per_call(self) -> float:
        return self.seconds / self.done if self.done else self.first_call

    def start(self, formula: str) -> None:
        # residual forces of the undisplaced supercell are subtracted: they are the
        # relaxation error (or the other engine's minimum), not a response to the
        # displacement. Timed, they give the engine's cost per call before its first
        # displaced one, so a projection sees the whole plan from the start
        t0 = time.perf_counter()
        self.residual = _forces(ase_atoms(self.perfect), self.calc, formula)
        self.first_call = time.perf_counter() - t0

    def run(self, formula: str, over: Callable[[], bool]) -> bool:
        """Forces of every displaced supercell, less the residual; stops (False) as soon as
        ``over()`` says the rest would not fit, asked before each call."""
        for i, cell in enumerate(self.cells):
            if cell is None:  # pair beyond fc3_cutoff: phono3py ignores its forces
                continue
            if over():
                return False
            t0 = time.perf_counter()
            self.forces[i] = _forces(ase_atoms(cell), self.calc, formula) - self.residual
            self.done += 1
            self.seconds += time.perf_counter() - t0
        return True


def lattice_thermal_conductivity(
    structure: Structure,
    calculator: Calculator,
    settings: KappaSettings | None = None,
    fc3_calculator: Calculator | None = None,
) -> KappaResult:
    """kappa_L of a relaxed ``structure`` with ``calculator`` forces (phono3py, RTA).

    ``structure`` should be relaxed tightly with the same calculator (``relax_for_kappa``,
    fmax ~ 1e-3 to 3e-3 eV/A). ``fc3_calculator``: a cheaper engine for the third-order
    constants only (the many fc3 supercells), ``calculator`` keeping the structure, fc2 and
    so the dispersion; its residual forces at ``calculator``'s minimum are subtracted like
    any other. Raises ValueError for bad input (NaN, non-periodic, an element the MLIP
    lacks) and ``KappaSkipped`` when a cost limit would be exceeded.
    """
    settings = settings or KappaSettings()
    start = time.perf_counter()
    geometry.check(structure)
    fc3_calculator = fc3_calculator or calculator
    mixed = fc3_calculator is not calculator
    temperatures = settings.temperature_list()
    formula = structure.composition.reduced_formula
    for calc in {id(c): c for c in (calculator, fc3_calculator)}.values():
        check_supported_elements(structure, calc)
        # one single point on the unit cell: unsupported elements fail here, cheaply
        _forces(AseAtomsAdaptor.get_atoms(structure), calc, formula)
    try:
        ph3, plan = setup_phono3py(structure, settings, separate_fc2=mixed)
        symmetrized = False
    except ValueError as exc:
        if str(exc):  # phono3py raises it without a message; any other ValueError stands
            raise
        # phono3py's bare "Site symmetry is broken": the relaxed cell keeps its group only
        # to within the relaxation's tolerance. Atoms onto that group's exact positions
        # (moves of ~1e-4 A for Th(TiGe)2), only here, so that every other value stands
        structure, symmetrized = symmetrize(structure, RELAX_SYMPREC), True
        ph3, plan = setup_phono3py(structure, settings, separate_fc2=mixed)
    budget = settings.budget_s

    t_forces = time.perf_counter()
    # one entry per force engine: fc3's supercells, then fc2's when they are separate
    sets = [_ForceSet(ph3.supercell, ph3.supercells_with_displacements, fc3_calculator)]
    if plan.n_fc2_supercells:
        cells = ph3.phonon_supercells_with_displacements
        sets.append(_ForceSet(ph3.phonon_supercell, cells, calculator))
    for fs in sets:
        fs.start(formula)

    def over_budget() -> bool:
        if budget is None:
            return False
        elapsed = time.perf_counter() - start
        projected = elapsed + sum(fs.left * fs.per_call for fs in sets)
        if projected > budget:
            n_total = sum(fs.n for fs in sets)
            rates = " and ".join(f"{fs.per_call:.2f}" for fs in sets)
            raise KappaSkipped(
                f"projected {projected:.0f} s for {n_total} supercells of "
                f"{plan.supercell_atoms} atoms ({rates} s per force call) exceeds "
                f"budget_s={budget:.0f}",
                n_supercells=n_total,
                supercell_atoms=plan.supercell_atoms,
                seconds=elapsed,
            )
        return False

    for fs in sets:
        fs.run(formula, over_budget)  # raises KappaSkipped rather than stop
    ph3.forces = sets[0].forces
    if plan.n_fc2_supercells:
        ph3.phonon_forces = sets[1].forces
    n_done = sum(fs.done for fs in sets)
    seconds_forces = time.perf_counter() - t_forces

    t_fit = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _force_constants(ph3, plan, settings)
    seconds_fit = time.perf_counter() - t_fit

    t_rta = time.perf_counter()
    rta_options = {"temperatures": temperatures, "is_isotope": settings.isotope, "log_level": 0}
    if settings.wigner:
        rta_options["transport_type"] = "SMM19"
    mesh, grid_matrix, grid_points = _set_mesh(ph3, settings)
    tensor, frequencies = _rta(ph3, settings, rta_options, budget, start, n_done,
                              plan.supercell_atoms, seconds_fit, formula)  # fmt: skip
    seconds_rta = time.perf_counter() - t_rta
    first_min = float(np.min(frequencies))
    retry = None
    if first_min <= UNSTABLE_THZ and settings.fc2_retry_min_length is not None:
        # imaginary modes of a harmonic part from the fc3 supercell, which may be too short
        # for fc2's range (the phonon screen saw none at its longer supercells): fc2 again
        # from a wider supercell, fc3 kept, and the RTA again
        retry = _wider_fc2(ph3, structure, settings, calculator, formula, start,
                           seconds_rta, rta_options)  # fmt: skip
        if retry.tensor is not None:
            tensor, frequencies, n_done = retry.tensor, retry.frequencies, n_done + retry.calls
    retried = retry is not None and retry.tensor is not None
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
        mesh=mesh,
        seconds=time.perf_counter() - start,
        seconds_forces=seconds_forces,
        seconds_rta=seconds_rta,
        seconds_fit=seconds_fit,
        min_frequency=float(np.min(frequencies)),
        fc2_retry=None if retry is None else retry.note,
        fc2_retried=retried,
        min_frequency_fc3_supercell=first_min,
        supercell_matrix=plan.supercell_matrix,
        fc2_supercell_matrix=retry.matrix if retried else plan.fc2_supercell_matrix,
        grid_points=grid_points,
        grid_matrix=grid_matrix,
        snapshots_per_minimum=(
            None if plan.fc3_minimum is None else round(plan.n_supercells / plan.fc3_minimum, 2)
        ),
        symmetrized=symmetrized,
    )


def _set_mesh(ph3, settings: KappaSettings) -> tuple[list[int], list[list[int]], int]:
    ph3.mesh_numbers = (
        float(settings.mesh)
        if isinstance(settings.mesh, int | float)
        else [int(n) for n in settings.mesh]
    )
    return _grid(ph3)


def _rta(ph3, settings: KappaSettings, rta_options: dict, budget: float | None, start: float,
         n_done: int, supercell_atoms: int, seconds_fit: float,
         formula: str) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """kappa (temperatures x 6, W/mK) and the frequencies on the whole mesh; raises
    ``KappaSkipped`` first when the RTA would run past ``budget`` s since ``start``."""
    ph3.init_phph_interaction()
    if budget is not None:
        # the RTA loop cannot be interrupted: time one of the costliest irreducible
        # q-points (lowest symmetry, largest star) and extrapolate before committing
        projected, n_ir = _rta_projection(ph3, rta_options)
        elapsed = time.perf_counter() - start
        if elapsed + projected > budget:
            mesh = _grid(ph3)[0]
            raise KappaSkipped(
                f"RTA on the {'x'.join(map(str, mesh))} mesh ({n_ir} irreducible "
                f"q-points) projected at {projected:.0f} s after {elapsed:.0f} s (the fit "
                f"{seconds_fit:.0f} s) exceeds budget_s={budget:.0f}",
                n_supercells=n_done,
                supercell_atoms=supercell_atoms,
                seconds=elapsed,
            )
    ph3.run_thermal_conductivity(**rta_options)
    tensor = _kappa_tensor(ph3, settings.wigner)  # (temperatures, 6) in W/mK
    if not np.isfinite(tensor).all():
        raise RuntimeError(f"{formula}: phono3py returned a non-finite kappa")
    ph3.run_phonon_solver()  # every grid point (a no-op when done), so no mode is missed
    return tensor, ph3.get_phonon_data()[0]


@dataclass
class _Fc2Retry:
    note: str  # what was done, or why not
    tensor: np.ndarray | None = None  # None: not retried, the first value stands
    frequencies: np.ndarray | None = None
    calls: int = 0
    matrix: list[list[int]] | None = None


def _wider_fc2(ph3, structure: Structure, settings: KappaSettings, calculator: Calculator,
               formula: str, start: float, seconds_rta: float,
               rta_options: dict) -> _Fc2Retry:  # fmt: skip
    """fc2 from finite displacements in a supercell ``fc2_retry_min_length`` wide, the fc3
    of ``ph3`` kept, and the RTA again; within what is left of ``budget_s``, else the
    reason it was not done."""
    from phono3py import Phono3py

    length = settings.fc2_retry_min_length
    now = float(perpendicular_widths(np.asarray(ph3.phonon_supercell.cell)).min())
    if now >= length:
        return _Fc2Retry(f"not retried: the fc2 supercell is already {now:.1f} A wide")
    matrix = choose_supercell_matrix(structure, length, settings.symprec)
    atoms = round(abs(np.linalg.det(matrix))) * len(structure)
    if atoms > settings.fc2_retry_max_atoms:
        return _Fc2Retry(f"not retried: a {length:g} A fc2 supercell has {atoms} atoms, over "
                         f"fc2_retry_max_atoms={settings.fc2_retry_max_atoms}")  # fmt: skip
    wider = Phono3py(ph3.unitcell, supercell_matrix=ph3.supercell_matrix,
                     phonon_supercell_matrix=matrix, primitive_matrix=ph3.primitive_matrix,
                     symprec=settings.symprec, log_level=0)  # fmt: skip
    wider.generate_fc2_displacements(distance=settings.displacement, is_plusminus="auto")
    fs = _ForceSet(wider.phonon_supercell, wider.phonon_supercells_with_displacements,
                   calculator)  # fmt: skip
    fs.start(formula)
    budget = settings.budget_s

    def projected() -> float:  # the RTA again costs what it cost the first time
        return time.perf_counter() - start + fs.left * fs.per_call + seconds_rta

    if not fs.run(formula, lambda: budget is not None and projected() > budget):
        return _Fc2Retry(f"not retried: {fs.n} fc2 supercells of {atoms} atoms and the RTA "
                         f"again projected {projected():.0f} s, over "
                         f"budget_s={budget:.0f}")  # fmt: skip
    wider.phonon_forces = fs.forces
    wider.fc3 = ph3.fc3
    wider.produce_fc2()
    wider.symmetrize_fc2()
    _set_mesh(wider, settings)
    # no budget check: the RTA again was projected above, at the first one's cost
    tensor, frequencies = _rta(wider, settings, rta_options, None, start, 0, atoms, 0.0, formula)
    note = f"fc2 from a supercell of {atoms} atoms ({fs.n} displacements)"
    return _Fc2Retry(note, tensor, frequencies, fs.n, matrix.tolist())


def _grid(ph3) -> tuple[list[int], list[list[int]], int]:
    """The q-point grid as a reader expects it: counts per axis, the grid matrix, points.

    A length mesh on a centred lattice makes phono3py use a generalized regular grid, whose
    ``mesh_numbers`` are the Smith normal form's diagonal (1x2x336 for a body-centred
    8x7x6 grid), not counts along axes; the grid matrix's rows are the conventional axes'
    counts times integer primitive vectors, so their gcds are those counts."""
    diagonal = [int(n) for n in ph3.grid.D_diag]
    points = int(np.prod(diagonal))
    if ph3.grid.grid_matrix is None:
        return diagonal, np.diag(diagonal).tolist(), points
    matrix = np.asarray(ph3.grid.grid_matrix, dtype=int)
    return [int(np.gcd.reduce(row)) for row in matrix], matrix.tolist(), points


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
        # the cutoff for fc3 only, as symfc's own dict: phono3py 4.10 hands its option
        # string to symfc unsplit, where "|cutoff=4.5" (fc2 options|fc3 options) reads as
        # no cutoff at all, and the fc2+fc3 fit then asked for 53 GiB on a 96-atom cell
        cutoff = None if settings.fc3_cutoff is None else {"cutoff": {3: settings.fc3_cutoff}}
        ph3.produce_fc3(fc_calculator="symfc", fc_calculator_options=cutoff)
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
