"""Charge-balanced decoding: the valence rules are masks on each step, not a rejection loop.

At every step the model's species and count distributions are combined into a joint over
(species, count) pairs plus END. A pair is masked when
- its species repeats one already chosen, or pairs with an element's other state in a way
  the valence rules forbid (mixed sign, comproportionation);
- the cell would exceed ``max_atoms``;
- (ionic) neutrality could no longer be reached with the tokens and atoms that remain
  (``tokens.reachable_charges``).
END is allowed only once the running charge is zero. So every finished ionic formula is
neutral. A row can still reach a dead end because the reachability table ignores which
species are left; such rows are counted and resampled (``stats['dead_ends']``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch
from pymatgen.core import Composition

from crysvcd import checkpoints
from crysvcd.chem.valence import ValenceToken
from crysvcd.conditioning import parse_conditions
from crysvcd.stage1.model import CompositionGPT, load_model
from crysvcd.stage1.tokens import (
    END,
    MAX_ABS_VALENCE,
    N_SPECIAL,
    PAD,
    START,
    reachable_charges,
)


@dataclass(frozen=True)
class GeneratedFormula:
    """One sampled composition with its valence tokens."""

    tokens: tuple[ValenceToken, ...]
    kind: str

    @property
    def composition(self) -> Composition:
        counts: dict[str, int] = {}
        for t in self.tokens:  # mixed valence: one element, several tokens
            counts[t.element] = counts.get(t.element, 0) + t.count
        return Composition(counts)

    @property
    def cell_formula(self) -> str:
        return self.composition.formula.replace(" ", "")

    @property
    def reduced_formula(self) -> str:
        return self.composition.reduced_formula

    @property
    def charge(self) -> int:
        return sum(t.valence * t.count for t in self.tokens)

    @property
    def n_atoms(self) -> int:
        return sum(t.count for t in self.tokens)

    def valence_string(self) -> str:
        return " ".join(str(t) for t in self.tokens)


@dataclass
class SampleStats:
    requested: int = 0
    drawn: int = 0  # finished sequences, before any rejection
    dead_ends: int = 0
    rejected_non_neutral: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class FormulaSampler:
    def __init__(self, model: CompositionGPT, neutrality: torch.Tensor | None = None):
        self.model = model.eval()
        # psi[k, q + offset]: how often the model's own free decoding, after k tokens at
        # charge q, ends neutral (``neutrality_table``); None: the older END redirect
        self.neutrality = neutrality
        cfg = model.cfg
        self.cfg = cfg
        vocab = model.vocab
        self.valences = vocab.valences()
        self.compat = vocab.compatibility()
        vals = self.valences[N_SPECIAL:]
        self.classes = sorted({v for v in vals.tolist() if v != 0})
        self.onehot = (vals[:, None] == torch.tensor(self.classes)[None]).long()  # (S, V)
        elements = [sp.element for sp in vocab.species]
        self.same_element = torch.tensor([[a == b for b in elements] for a in elements])
        compat = self.compat[N_SPECIAL:, N_SPECIAL:]
        # Species of each valence class that choosing s rules out (s itself included)
        # when s's element is not yet in the formula.
        self.removed_if_new = (self.same_element & ~compat).long() @ self.onehot
        self.powers = 2 ** torch.arange(len(self.classes), dtype=torch.long)
        # charge arithmetic is done per valence class (a dozen) and then spread to the
        # species (hundreds) of each class: the same numbers, far fewer operations
        self.class_valence = torch.tensor(self.classes or [0], dtype=torch.long)
        self.class_of = (
            self.onehot.argmax(1) if self.classes else torch.zeros(len(vals), dtype=torch.long)
        )
        self.offset = MAX_ABS_VALENCE * cfg.max_atoms
        self.close_on_end = True

    def _table(self, key: int) -> torch.Tensor:
        """Reachability table for one pattern of available valence classes (bit i: class i)."""
        present = tuple(v for i, v in enumerate(self.classes) if key >> i & 1)
        return _reach_table(present, self.cfg.max_tokens, self.cfg.max_atoms)

    def _redirect_end(self, joint, logp_end, end_ok, ok, charge, counts):
        """Where the model would stop but the charge is not yet zero, give END's probability
        to the moves that close the charge exactly, in proportion to their own probability.

        Without this, END's mass spreads over every continuation and masked decoding drifts
        to long formulas (measured: 5.0 elements per ionic formula against 3.2 in the data).
        """
        vals = self.valences[N_SPECIAL:]
        closes = ok & (charge[:, None, None] + vals[None, :, None] * counts[None, None, :] == 0)
        p = joint.exp()
        pc = p * closes.reshape(len(p), -1)
        total = pc.sum(1, keepdim=True)
        redirect = (~end_ok & (total.squeeze(1) > 0))[:, None]
        extra = logp_end.exp()[:, None] * pc / total.clamp(min=1e-30)
        return torch.where(redirect, p + extra, p).log()

    def _twist(self, k: int, charge, atoms, counts) -> torch.Tensor:
        """(b, S, C) log psi of the state each move leads to: the masked sampler then draws
        from p(move) psi(next state), an approximation of the model conditioned on ending
        neutral, instead of forcing every non-neutral prefix to go on (which lengthens the
        formulas). END at charge 0 keeps its own probability (psi = 1)."""
        q = charge[:, None, None] + self.class_valence[None, :, None] * counts[None, None, :]
        qi = (q + self.offset).clamp(0, 2 * self.offset)  # (b, V, C)
        table = self.neutrality[min(k, len(self.neutrality) - 1)]  # (atoms, charge)
        ai = (atoms[:, None, None] + counts[None, None, :]).clamp(max=table.shape[0] - 1)
        per_class = table[ai.expand_as(qi), qi].clamp(min=1e-6).log()
        return per_class[:, self.class_of]

    def _reachable(self, allowed, used, charge, atoms, counts, left):
        """(b, S, C) mask: after adding (species, count), can the charge still reach zero?

        Which valence classes stay available after a move depends on the species (its
        pattern ``key``, a few distinct ones per step); the charge it leads to depends only
        on its class and count. So the lookup runs per (pattern, class, count) and is then
        spread to the species with one gather (measured: 0.22 s of 1.1 s per 1,000 formulas
        when done per species)."""
        cfg = self.cfg
        b = len(charge)
        allowed_s = allowed[:, N_SPECIAL:]
        avail = allowed_s.float() @ self.onehot.float()  # (b, V) species left per class
        elem_used = (used.float() @ self.same_element.float()) > 0  # (b, S)
        removed = torch.where(elem_used[..., None], self.onehot[None], self.removed_if_new[None])
        # pattern of classes still available after the move, as an integer (bit v: class v)
        key = ((avail[:, None, :] > removed).float() @ self.powers.float()).long()
        now = ((avail > 0).float() @ self.powers.float()).long()
        key = torch.where(allowed_s, key, now[:, None])
        seen = torch.bincount(key.flatten(), minlength=2 ** len(self.powers))
        uniq = torch.nonzero(seen).flatten()
        slot = torch.zeros_like(seen).index_put_((uniq,), torch.arange(len(uniq)))
        tables = torch.stack([self._table(k)[left] for k in uniq.tolist()])  # (U, A, Q)
        q = charge[:, None, None] + self.class_valence[None, :, None] * counts[None, None, :]
        in_range = q.abs() <= self.offset  # (b, V, C)
        idx = (self.offset - q).clamp(0, 2 * self.offset)
        a_left = (cfg.max_atoms - atoms[:, None, None] - counts).clamp(min=0).expand_as(idx)
        per_class = tables[:, a_left, idx] & in_range  # (U, b, V, C)
        per_class = per_class.permute(1, 0, 2, 3).reshape(b, -1, len(counts))  # (b, U*V, C)
        which = slot[key] * len(self.class_valence) + self.class_of  # (b, S)
        return torch.gather(per_class, 1, which[..., None].expand(-1, -1, len(counts)))

    def _props(self, n: int, conditions: dict[str, float]) -> torch.Tensor | None:
        specs = self.model.properties
        if not specs:
            return None
        row = [
            specs[j].encode_target(conditions[s.name]) if s.name in conditions else float("nan")
            for j, s in enumerate(specs)
        ]
        return torch.tensor(row, dtype=torch.float32).expand(n, -1).clone()

    @torch.no_grad()
    def _batch(self, b, temperature, top_k, top_p, props, gen, constrained, guidance=None):
        cfg = self.cfg
        n_species = self.model.vocab.size - N_SPECIAL
        seq = torch.full((b, 1), START, dtype=torch.long)
        cnt = torch.zeros((b, 1), dtype=torch.long)
        charge = torch.zeros(b, dtype=torch.long)
        atoms = torch.zeros(b, dtype=torch.long)
        allowed = torch.ones(b, self.model.vocab.size, dtype=torch.bool)
        used = torch.zeros(b, n_species, dtype=torch.bool)
        done = torch.zeros(b, dtype=torch.bool)
        dead = torch.zeros(b, dtype=torch.bool)
        counts = torch.arange(1, cfg.max_count + 1)
        ionic = cfg.kind == "ionic"
        # incremental decoding: each step runs the GPT on the new token alone (KV cache)
        cache, new_s, new_c = None, seq, cnt
        mask = torch.ones(b, 1, dtype=torch.long)
        guided = guidance is not None and props is not None
        if guided:  # the conditioned and the unconditioned rows run as one batch of 2b
            props = torch.cat([props, torch.full_like(props, float("nan"))])
        for t in range(cfg.max_tokens + 1):
            if guided:
                new_s, new_c, mask = new_s.repeat(2, 1), new_c.repeat(2, 1), mask.repeat(2, 1)
            ls, h, cache = self.model.step(new_s, new_c, props, cache, mask)
            if guided:
                mask = mask[:b]
            lc = self.model.count_logits_all(h)[:, N_SPECIAL:, 1:]  # (b, S, C)
            if guided:
                # classifier-free guidance, as in Stage II: (1 + w) cond - w uncond
                ls = (1 + guidance) * ls[:b] - guidance * ls[b:]
                lc = (1 + guidance) * lc[:b] - guidance * lc[b:]
            logp_s = torch.log_softmax(ls / temperature, -1)
            logp_c = torch.log_softmax(lc / temperature, -1)
            joint = logp_s[:, N_SPECIAL:, None] + logp_c  # (b, S, C)
            ok = allowed[:, N_SPECIAL:, None] & (atoms[:, None, None] + counts <= cfg.max_atoms)
            left = cfg.max_tokens - t - 1
            if left < 0:
                ok = torch.zeros_like(ok)
            elif ionic and constrained:
                ok &= self._reachable(allowed, used, charge, atoms, counts, left)
            joint = joint.masked_fill(~ok, float("-inf")).reshape(b, -1)
            end_ok = (charge == 0) if (ionic and constrained) else torch.ones_like(done)
            end_ok &= t > 0
            if ionic and constrained and self.neutrality is not None:
                joint = joint + self._twist(t + 1, charge, atoms, counts).reshape(b, -1)
            elif ionic and constrained and self.close_on_end:
                joint = self._redirect_end(joint, logp_s[:, END], end_ok, ok, charge, counts)
            end = logp_s[:, END].masked_fill(~end_ok, float("-inf"))
            logits = _top_k_top_p(torch.cat([joint, end[:, None]], 1), top_k, top_p)
            stuck = torch.isinf(logits).all(1) & ~done
            dead |= stuck
            choice = _two_stage(logits, n_species, cfg.max_count, stuck | done, gen)
            is_end = choice == n_species * cfg.max_count
            sp = torch.where(is_end, END, N_SPECIAL + choice // cfg.max_count)
            ct = torch.where(is_end, 0, 1 + choice % cfg.max_count)
            finished = done | dead
            sp = sp.masked_fill(finished, PAD)
            ct = ct.masked_fill(finished, 0)
            seq = torch.cat([seq, sp[:, None]], 1)
            cnt = torch.cat([cnt, ct[:, None]], 1)
            new_s, new_c = sp[:, None], ct[:, None]
            mask = torch.cat([mask, (sp != PAD).long()[:, None]], 1)
            live = ~finished & ~is_end
            charge += torch.where(live, self.valences[sp] * ct, 0)
            atoms += torch.where(live, ct, 0)
            allowed &= torch.where(live[:, None], self.compat[sp], True)
            used[live, (sp - N_SPECIAL)[live]] = True
            done |= ~finished & is_end
            if (done | dead).all():
                break
        return seq, cnt, done & ~dead

    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        conditions: dict[str, float] | list[str] | None = None,
        batch_size: int = 1000,
        constrained: bool = True,
        neutral_only: bool = True,
        guidance: float | None = None,
    ) -> tuple[list[GeneratedFormula], SampleStats]:
        """``n`` formulas. ``constrained=False``: decoding without the valence masks, with
        non-neutral ionic outputs rejected afterwards (the baseline the masks are measured
        against) or, with ``neutral_only=False`` too, kept (the unconstrained generator of
        the paper's comparison). ``guidance`` w: classifier-free guidance towards the
        ``conditions``, logits (1 + w) conditioned - w unconditioned (0 or None: none)."""
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if guidance is not None and guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        conds = parse_conditions(conditions, self.model.properties)
        gen = torch.Generator().manual_seed(seed)
        stats = SampleStats(requested=n)
        out: list[GeneratedFormula] = []
        t0 = time.perf_counter()
        while len(out) < n:
            b = min(batch_size, max(16, int((n - len(out)) * 1.1)))
            w = guidance if conds and guidance else None  # guidance needs a condition
            seq, cnt, good = self._batch(
                b, temperature, top_k, top_p, self._props(b, conds), gen, constrained, w
            )
            stats.dead_ends += int((~good).sum())
            for row in torch.nonzero(good).flatten().tolist():
                stats.drawn += 1
                tokens = self.model.vocab.decode(seq[row].tolist(), cnt[row].tolist())
                f = GeneratedFormula(tokens, self.cfg.kind)
                if f.charge != 0 and neutral_only:
                    stats.rejected_non_neutral += 1
                    continue
                if len(out) < n:
                    out.append(f)
        stats.seconds = time.perf_counter() - t0
        return out, stats


@torch.no_grad()
def neutrality_table(sampler: FormulaSampler, n: int = 20000, seed: int = 0) -> torch.Tensor:
    """psi[k, a, q + offset]: the share of the model's free (unmasked) decodings that, having
    placed k tokens holding a atoms at running charge q, end neutral; estimated from ``n``
    decodings and smoothed towards the (k, q) share (three decodings' worth), which is in
    turn smoothed towards the overall neutral rate. The twisted sampler weighs each move by
    it. Measured on the shipped ionic model (README): 3.39 elements per formula against
    3.24 in the dev split and 3.98 for the plain masks."""
    cfg = sampler.cfg
    shape = (cfg.max_tokens + 2, cfg.max_atoms + 1, 2 * sampler.offset + 1)
    through, neutral = torch.zeros(shape), torch.zeros(shape)
    gen = torch.Generator().manual_seed(seed)
    done = 0
    while done < n:
        b = min(2000, n - done)
        seq, cnt, good = sampler._batch(b, 1.0, None, None, None, gen, constrained=False)
        tokens, counts = seq[:, 1:], cnt[:, 1:]
        is_species = tokens >= N_SPECIAL
        charge = torch.cumsum(sampler.valences[tokens] * counts * is_species, 1)
        atoms = torch.cumsum(counts * is_species, 1).clamp(max=cfg.max_atoms)
        ended_neutral = (good & (charge[:, -1] == 0)).float()
        zero = torch.zeros(b, 1, dtype=torch.long)
        q_idx = (torch.cat([zero, charge], 1) + sampler.offset).clamp(0, shape[2] - 1)
        a_idx = torch.cat([zero, atoms], 1)
        placed = torch.cat([torch.ones(b, 1, dtype=torch.bool), is_species], 1)
        for k in range(q_idx.shape[1]):
            rows = placed[:, k]
            flat = a_idx[rows, k] * shape[2] + q_idx[rows, k]
            through[k].view(-1).index_add_(0, flat, torch.ones(len(flat)))
            neutral[k].view(-1).index_add_(0, flat, ended_neutral[rows])
        done += b
    rate = neutral[0].sum() / through[0].sum().clamp(min=1)
    by_charge = (neutral.sum(1) + rate) / (through.sum(1) + 1)  # (k, q)
    return (neutral + 3 * by_charge[:, None, :]) / (through + 3)


def calibrate(path: str | Path, n: int = 20000, seed: int = 0) -> torch.Tensor:
    """Add the neutrality table to an ionic checkpoint (in place, atomically)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    sampler = FormulaSampler(load_model(path))
    if sampler.cfg.kind != "ionic":
        raise ValueError(f"{path}: only ionic models need a neutrality table")
    ckpt["neutrality"] = neutrality_table(sampler, n, seed)
    # the step of the weights it was made for: a later best.pt needs a new table
    ckpt["neutrality_info"] = {
        "rollouts": n,
        "seed": seed,
        "step": ckpt.get("state", {}).get("step"),
    }
    checkpoints.atomic_save(ckpt, path)
    _load_sampler.cache_clear()
    return ckpt["neutrality"]


def _two_stage(logits, n_species: int, n_counts: int, skip, gen) -> torch.Tensor:
    """A draw from softmax(logits) over (species, count) pairs + END, made as species (or
    END) from its marginal, then the count given the species: the same law as one draw
    over all S x C + 1 entries, at a fraction of the cost. Rows in ``skip`` (finished or
    stuck) get a placeholder that the caller ignores."""
    b = len(logits)
    joint = logits[:, :-1].reshape(b, n_species, n_counts)
    marginal = torch.cat([torch.logsumexp(joint, -1), logits[:, -1:]], 1)  # (b, S + 1)
    marginal = marginal.masked_fill(skip[:, None], 0.0)
    s = torch.multinomial(torch.softmax(marginal, -1), 1, generator=gen).squeeze(1)
    is_end = s == n_species
    rows = joint[torch.arange(b), s.clamp(max=n_species - 1)]  # (b, C)
    rows = rows.masked_fill((is_end | skip)[:, None], 0.0)
    c = torch.multinomial(torch.softmax(rows, -1), 1, generator=gen).squeeze(1)
    return torch.where(is_end, n_species * n_counts, s * n_counts + c)


def _top_k_top_p(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    if top_k is not None and top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, -1) > top_p  # keep the token that crosses
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


@cache
def _reach_table(valences: tuple, max_tokens: int, max_atoms: int) -> torch.Tensor:
    return reachable_charges(valences, max_tokens, max_atoms)


@cache
def _load_sampler(path: str) -> FormulaSampler:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return FormulaSampler(load_model(path), ckpt.get("neutrality"))


def load_sampler(path: str | Path | None = None, kind: str = "ionic") -> FormulaSampler:
    """The sampler of a Stage I checkpoint (the shipped ``kind`` model by default), loaded
    once per path and process."""
    path = Path(path) if path else checkpoints.shipped(f"stage1-{kind}")
    return _load_sampler(str(path.resolve()))


def sample_formulas(
    n: int,
    kind: str = "ionic",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    conditions: dict[str, float] | list[str] | None = None,
    checkpoint: str | Path | None = None,
    guidance: float | None = None,
) -> list[GeneratedFormula]:
    """Sample ``n`` charge-balanced formulas from the shipped (or a given) Stage I model."""
    if kind not in ("ionic", "alloy"):
        raise ValueError(f"kind must be 'ionic' or 'alloy', not {kind!r}")
    sampler = load_sampler(checkpoint, kind)
    if sampler.cfg.kind != kind:
        raise ValueError(f"{checkpoint} is a {sampler.cfg.kind} model, not {kind}")
    formulas, _ = sampler.sample(n, temperature, top_k, top_p, seed, conditions, guidance=guidance)
    return formulas
