"""Reverse diffusion: structures for given compositions.

With ``steps == T`` this is DiffCSP's predictor-corrector sampler: each step first takes a
Langevin corrector step on the coordinates, then the ancestral predictor step on lattice
(DDPM) and coordinates (reverse variance-exploding SDE on the torus). With fewer steps the
same updates jump between strided times t -> s: the lattice uses the exact DDPM posterior
q(L_s | L_t, L_0 = predicted), the coordinates the ancestral step from sigma_t to sigma_s.
``eta`` < 1 turns part of the fresh noise of both predictor steps into the deterministic
(DDIM) direction; eta = 1 is the ancestral sampler above, eta = 0 is deterministic given
the starting noise (the corrector keeps its own noise).
Classifier-free guidance mixes the conditional and unconditional predictions,
w * cond + (1 - w) * uncond. ``temperature`` (< 1: less fresh noise) and ``anti_anneal``
are off by default: on 400 dev rows neither changed the match rate beyond noise (README).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from crysvcd import checkpoints
from crysvcd.conditioning import parse_conditions
from crysvcd.config import check_precision
from crysvcd.stage2.batch import Crystal, collate, composition_atoms
from crysvcd.stage2.cspnet import CSPNet, load_model
from crysvcd.stage2.schedules import Schedules
from crysvcd.training import precision_context, resolve_device

if TYPE_CHECKING:  # pymatgen only at the edges: the sampler itself runs on torch alone
    from pymatgen.core import Composition, Structure

LATTICE_CLIP = 50.0  # Angstrom; the largest |lattice entry| in the training pool is 45.4


@dataclass
class SamplerSettings:
    steps: int = 1000
    corrector: bool = True
    step_lr: float = 1e-5  # Langevin step scale, DiffCSP's value for MP-20 CSP
    guidance: float | None = None  # None: the model's configured w
    eta: float = 1.0  # 1: ancestral (DiffCSP), 0: deterministic DDIM-style predictor
    batch_size: int = 256
    # Anti-annealing (FlowMM's inference trick): the coordinate predictor's drift is scaled
    # from 1 at t = T up to 1 + anti_anneal at the last step, so late steps commit to a mode
    # instead of wandering; 0 is DiffCSP's sampler.
    anti_anneal: float = 0.0
    temperature: float = 1.0  # scale of the predictors' fresh noise; 1 is DiffCSP's sampler
    # the network's arithmetic (training.precision_context); the updates stay fp32. bf16 is
    # several times faster on CPUs with AVX512-BF16 or AMX and on GPUs, slower elsewhere
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.anti_anneal < 0:
            raise ValueError(f"anti_anneal must be >= 0, got {self.anti_anneal}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")


def timestep_schedule(timesteps: int, steps: int) -> list[int]:
    """Descending times T = t_0 > ... > t_{steps-1} >= 1, evenly strided."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be in 1..{timesteps}, got {steps}")
    ts = np.linspace(timesteps, 1, steps).round().astype(int)
    return sorted(set(ts.tolist()), reverse=True)


class StructureSampler:
    """Reverse diffusion with one model on one device (``auto``: CUDA when present); the
    structures come back as CPU pymatgen objects either way."""

    def __init__(self, model: CSPNet, device: str = "cpu"):
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        cfg = model.cfg
        self.sched = Schedules(cfg.timesteps, cfg.sigma_begin, cfg.sigma_end).to(self.device)

    def _net(self, t, frac, lattice, batch, props, precision):
        with precision_context(self.device, precision):
            pl, px = self.model(t, frac, lattice, batch, props)
        return pl.float(), px.float()

    def _predict(self, t, frac, lattice, batch, props, w, precision="fp32"):
        if props is None:
            return self._net(t, frac, lattice, batch, None, precision)
        pl_c, px_c = self._net(t, frac, lattice, batch, props, precision)
        nan = torch.full_like(props, float("nan"))
        pl_u, px_u = self._net(t, frac, lattice, batch, nan, precision)
        return w * pl_c + (1 - w) * pl_u, w * px_c + (1 - w) * px_u

    @torch.no_grad()
    def _run(
        self, crystals: list[Crystal], props, s: SamplerSettings, gen, progress
    ) -> list[Structure]:
        sch = self.sched
        dev = self.device
        batch = collate(crystals, 0).to(dev)
        n, b = len(batch.atom_types), batch.n_crystals
        w = self.model.cfg.guidance if s.guidance is None else s.guidance
        frac = torch.rand(n, 3, generator=gen, device=dev)
        lattice = torch.randn(b, 3, 3, generator=gen, device=dev)
        ts = timestep_schedule(sch.timesteps, s.steps)
        for i, t in enumerate(ts):
            prev = ts[i + 1] if i + 1 < len(ts) else 0
            tt = torch.full((b,), t, dtype=torch.long, device=dev)
            sigma_t, sigma_s = sch.sigmas[t], sch.sigmas[prev]
            norm = sch.sigmas_norm[t].sqrt()
            if s.corrector:
                step = s.step_lr * (sigma_t / sch.sigmas[1]) ** 2
                _, px = self._predict(tt, frac, lattice, batch, props, w, s.precision)
                # no noise in the last corrector step, as DiffCSP: it would only blur the answer
                noise = torch.randn(frac.shape, generator=gen, device=dev) if prev > 0 else 0.0
                frac = torch.remainder(frac + step * px * norm + (2 * step).sqrt() * noise, 1.0)
            pl, px = self._predict(tt, frac, lattice, batch, props, w, s.precision)
            # coordinates, DDIM form: x0 = x_t + sigma_t^2 score, eps = -sigma_t score,
            # x_s = x0 + sqrt(sigma_s^2 - c^2) eps + c z. With eta = 1 (c = sigma_s
            # sqrt(sigma_t^2 - sigma_s^2) / sigma_t) this is the reverse VE SDE's ancestral step.
            score = px * norm
            std = s.eta * sigma_s * (sigma_t**2 - sigma_s**2).sqrt() / sigma_t
            # sqrt(sigma_s^2 - std^2), as a sum of positive terms (no cancellation)
            keep = sigma_s * ((1 - s.eta**2) + s.eta**2 * sigma_s**2 / sigma_t**2).sqrt()
            noise = torch.randn(frac.shape, generator=gen, device=dev) * s.temperature
            boost = 1 + s.anti_anneal * i / max(len(ts) - 1, 1)
            drift = boost * sigma_t * (sigma_t - keep) * score
            frac = torch.remainder(frac + drift + std * noise, 1.0)
            # lattice: DDPM posterior q(L_s | L_t, L0_hat), written in DDIM form below
            ab_t, ab_s = sch.alphas_bar[t], sch.alphas_bar[prev]
            # Clip the predicted clean lattice, as DDPM samplers clip x0: near t = T the
            # cosine schedule's alpha_bar is ~1e-9 and dividing by it amplifies any error
            # in the predicted noise into lattices of kilometres.
            l0 = ((lattice - (1 - ab_t).sqrt() * pl) / ab_t.sqrt()).clamp(
                -LATTICE_CLIP, LATTICE_CLIP
            )
            # eta = 1 equals the DDPM posterior algebraically (not bit for bit)
            eps = (lattice - ab_t.sqrt() * l0) / (1 - ab_t).sqrt()
            sd = s.eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()
            # sqrt(1 - ab_s - sd^2) written without cancellation (ab_s ~ 1e-9 near t = T)
            keep = (
                (1 - s.eta**2) * (1 - ab_s) + s.eta**2 * (1 - ab_s) ** 2 * ab_t / ab_s / (1 - ab_t)
            ).sqrt()
            lattice = ab_s.sqrt() * l0 + keep * eps
            if prev > 0:
                lattice = lattice + sd * s.temperature * torch.randn(
                    lattice.shape, generator=gen, device=dev
                )
            if progress is not None:
                progress(b)
        return lattice.cpu(), frac.cpu()

    def crystal_of(self, composition: Composition | str) -> Crystal:
        """The sampling item of a cell composition; ValueError says what the model cannot
        take (too many atoms, an element beyond Pu, a fractional count)."""
        from pymatgen.core import Composition

        from crysvcd.chem import MAX_Z

        comp = Composition(composition)
        if len(comp) == 0:
            raise ValueError("empty composition")
        heavy = [el.symbol for el in comp.elements if el.Z > MAX_Z]
        if heavy:
            raise ValueError(f"{comp.formula}: element(s) {heavy} beyond Z = {MAX_Z}")
        types = composition_atoms(comp)
        max_atoms = self.model.cfg.max_atoms
        if len(types) > max_atoms:
            raise ValueError(
                f"{comp.formula.replace(' ', '')}: {len(types)} atoms, more than the "
                f"model's {max_atoms}"
            )
        return Crystal(types, np.zeros((len(types), 3)), np.eye(3))

    def sample(
        self,
        compositions: list[Composition],
        settings: SamplerSettings | None = None,
        seed: int = 0,
        conditions: dict[str, float] | list[str] | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> list[Structure]:
        """One structure per composition (repeat a composition to get several).
        ``progress(n)`` is called after every step with the number of structures it moved."""
        from pymatgen.core import Lattice, Structure

        crystals = [self.crystal_of(comp) for comp in compositions]
        drawn = self.sample_crystals(crystals, settings, seed, conditions, progress)
        return [
            Structure(
                Lattice(lat.astype(float)), [int(z) for z in c.atom_types], frac.astype(float)
            )
            for c, (lat, frac) in zip(crystals, drawn)
        ]

    def sample_crystals(
        self,
        crystals: list[Crystal],
        settings: SamplerSettings | None = None,
        seed: int = 0,
        conditions: dict[str, float] | list[str] | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(lattice rows, fractional coordinates) per crystal, as arrays: the part of
        ``sample`` that needs torch alone (device runs)."""
        s = settings or SamplerSettings()
        conds = parse_conditions(conditions, self.model.properties)
        gen = torch.Generator(self.device).manual_seed(seed)
        out = []
        for i in range(0, len(crystals), s.batch_size):
            chunk = crystals[i : i + s.batch_size]
            props = None
            if conds:
                row = [
                    spec.encode_target(conds[spec.name]) if spec.name in conds else float("nan")
                    for spec in self.model.properties
                ]
                props = torch.tensor(row, dtype=torch.float32, device=self.device)
                props = props.expand(len(chunk), -1).clone()
            lattice, frac = self._run(chunk, props, s, gen, progress)
            start = 0
            for k, c in enumerate(chunk):
                m = len(c.atom_types)
                out.append((lattice[k].numpy(), frac[start : start + m].numpy()))
                start += m
        return out


@cache
def _load_sampler(path: str, device: str) -> StructureSampler:
    return StructureSampler(load_model(path), device)


def load_sampler(path: str | Path | None = None, device: str = "cpu") -> StructureSampler:
    """The sampler of a Stage II checkpoint (the shipped one by default), loaded once per
    path, device and process."""
    path = Path(path) if path else checkpoints.shipped("stage2")
    return _load_sampler(str(path.resolve()), str(resolve_device(device)))


def predict_structures(
    compositions: list[Composition | str],
    steps: int = 1000,
    seed: int = 0,
    conditions: dict[str, float] | list[str] | None = None,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
) -> list[Structure]:
    """Crystal-structure prediction with the shipped (or a given) Stage II model."""
    sampler = load_sampler(checkpoint, device)
    return sampler.sample(compositions, SamplerSettings(steps=steps), seed, conditions)
