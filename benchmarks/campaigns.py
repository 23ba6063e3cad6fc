"""Property campaigns against unconditioned generation on the same budget (issue 15, the
paper's Fig. 4).

    crysvcd campaign dielectric --target 50 --config benchmarks/campaigns/dielectric_50.toml \\
        --out RUN_C
    crysvcd campaign dielectric --target 50 \\
        --config benchmarks/campaigns/dielectric_unconditioned.toml --out RUN_U
    python benchmarks/campaigns.py RUN_C RUN_U [--arm NAME=RUN ...] [--out FOLDER [--stem NAME]]

(the same for kappa with ``--target high|low``; for kappa it also judges the composition
surrogate's prediction, which every crystal has, beside phono3py's few). For each run and
round: crystals generated, stable (Ehull < 0.1 eV/atom after relaxation, and phonon-stable
where phonons ran), stable with the property computed, hits, and the hit share with its
Wilson 95 % interval; the ratio of the campaign's share to the unconditioned one, with its
95 % interval, against the issue's bar (at least 2x, and the excess significant: one-sided
Fisher exact p < 0.05); the campaign's top five candidates; and, in ``--out``, the
property's distribution for the training set, the unconditioned run and the campaign (PNG +
CSV).
``--arm NAME=RUN`` adds another arm of the same target (for example the screen alone on the
shipped models), judged and compared with the unconditioned run the same way. Any RUN may be
``RUN,RUN,...``: replicates of one arm (the same settings, other seeds), pooled round by
round (refused when their settings differ in anything but the seed or how the labels were
computed). For epsilon it also judges the shares again with stricter metal flags.
A hit is judged by the campaign's target (``loop.targets``). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from scipy.stats import fisher_exact
from scipy.stats.contingency import relative_risk

from crysvcd import metrics
from crysvcd.evaluate.gap import METAL_BELOW
from crysvcd.loop.config import HOW, LoopConfig
from crysvcd.loop.figures import (
    _col,
    kept_stable,
    likely_metal,
    property_histogram,
    usable_values,
)

# stricter metal flags the dielectric readout also reports (the shipped one is METAL_BELOW)
METAL_CUTS = (0.10, 0.15, 0.20)


def load(run: Path) -> tuple[LoopConfig, pd.DataFrame, pd.DataFrame]:
    cfg = LoopConfig(**json.loads((run / "loop.json").read_text())["config"])
    return cfg, pd.read_csv(run / "structures.csv"), pd.read_csv(run / "shares.csv")


def load_pooled(spec: str) -> tuple[LoopConfig, pd.DataFrame, list[Path]]:
    """``RUN`` or ``RUN,RUN,...``: one arm's replicates, their structures tables stacked (a
    ``seed`` column tells them apart). Replicates must differ only in the seed, or pooling
    them would mix two arms; how the labels were computed (``loop.config.HOW``: workers,
    scheduler, label device, relax batch) may differ, as a resumed run's may."""
    runs = [Path(part) for part in spec.split(",") if part]
    loaded = [load(run) for run in runs]
    seeds = [cfg.seed for cfg, _, _ in loaded]
    if len(set(seeds)) < len(seeds):
        # a run given twice shares its seed too: either way its crystals would count twice
        raise SystemExit(f"{spec}: replicates share a seed ({sorted(seeds)}): the same crystals")
    first = loaded[0][0]
    for run, (cfg, _, _) in zip(runs[1:], loaded[1:]):
        differ = [k for k, v in vars(cfg).items()
                  if k != "seed" and k not in HOW and vars(first).get(k) != v]  # fmt: skip
        if differ:
            raise SystemExit(f"{run} is not a replicate of {runs[0]}: {', '.join(differ)} differ")
    table = pd.concat([t.assign(seed=cfg.seed) for cfg, t, _ in loaded], ignore_index=True)
    return first, table, runs


def hits(table: pd.DataFrame, value: pd.Series, hit: pd.Series, stable_only=True) -> dict:
    """Counts over one round's table: of the stable crystals (or all, ``stable_only``
    false) with a ``value``, the ``hit`` ones."""
    stable = kept_stable(table)
    with_value = (stable if stable_only else pd.Series(True, index=table.index)) & value.notna()
    s = metrics.share(list(hit[with_value]))
    return {
        "generated": len(table), "stable": int(stable.sum()), "with_value": int(with_value.sum()),
        "hits": int((hit & with_value).sum()), "share": s["share"], "lo": s["lo"], "hi": s["hi"],
    }  # fmt: skip


def target_hits(table: pd.DataFrame, target) -> dict:
    """The issue's measure: the campaign's ``target`` judging every run's computed values."""
    value = usable_values(table, target)
    return hits(table, value, pd.Series(target.hit(value), index=table.index) == 1)


def hits_at_metal_cut(table: pd.DataFrame, target, cut: float) -> dict:
    """dielectric only: ``target_hits`` with a stricter metal flag, every crystal whose
    formula the pool does not hold and whose P(gapped) is under ``cut`` left out of the count
    (hit or not), as well as the pool's metals, as the shipped flag
    (``evaluate.gap.METAL_BELOW``) leaves out its own. A screen that selects for high
    surrogate epsilon also selects narrow-gap and metallic compositions just above the
    shipped cut; this says how much of a share rests on them."""
    value = usable_values(table, target).where(~likely_metal(table, cut))
    return hits(table, value, pd.Series(target.hit(value), index=table.index) == 1)


def surrogate_hits(table: pd.DataFrame, target, stable_only: bool = True) -> dict:
    """kappa only: the composition surrogate's prediction, which every crystal has (phono3py
    runs on a few per round): a hit is a formula the surrogate places in the tenth of its
    AFLOW-AGL training formulas toward the target. ``stable_only`` false: over every
    generated crystal, stable or not (where the conditioning moved the chemistry)."""
    from crysvcd.evaluate.kappa_surrogate import KappaSurrogate

    cut = KappaSurrogate.load().cut(0.1, target.direction)
    value = pd.to_numeric(table.get("kappa_surrogate", pd.Series(index=table.index)),
                          errors="coerce")  # fmt: skip
    hit = value >= cut if target.direction == "high" else value <= cut
    return hits(table, value, hit, stable_only)


def kappa_of_every_stable(table: pd.DataFrame, target, unknown_hits: bool) -> dict:
    """kappa: the share over every stable crystal, not only those phono3py labelled. A
    crystal the screens passed over (the composition surrogate's prescreen, or a Slack
    ranking cut) counts as a miss: that is what the screens claim. A crystal whose kappa
    is missing for another reason (phono3py over its budget or failed, imaginary modes in
    phono3py's phonons, phonons that failed) is unknown: a miss with ``unknown_hits``
    false, a hit with it true, so the two give the share's lower and upper bounds."""
    stable = kept_stable(table)
    value = usable_values(table, target)
    hit = pd.Series(target.hit(value), index=table.index) == 1
    kappa_skip = _col(table, "kappa_skipped", "").fillna("").astype(str)
    phonon_skip = _col(table, "phonon_skipped", "").fillna("").astype(str)
    screened = value.isna() & (
        phonon_skip.str.startswith("kappa surrogate")
        | kappa_skip.str.startswith("screen: Slack estimate ranked")
    )
    unknown = stable & value.isna() & ~screened
    counted = hit | (unknown if unknown_hits else False)
    s = metrics.share(list(counted[stable]))
    return {
        "generated": len(table), "stable": int(stable.sum()), "with_value": int(stable.sum()),
        "computed": int((stable & value.notna()).sum()),
        "screened_out": int((stable & screened).sum()),
        "unknown": int(unknown.sum()), "hits": int((counted & stable).sum()),
        "share": s["share"], "lo": s["lo"], "hi": s["hi"],
    }  # fmt: skip


def known_high_kappa(tables: dict) -> None:
    """kappa high: the generated crystals whose formula is a known high-kappa crystal
    (phononDB PBE kappa >= 100 W/mK at 300 K, or the paper's highlight GeC, about 183),
    stable or not, and the training-pool crystal each matches (``known_match``, the
    generator's StructureMatcher check), if any."""
    from pymatgen.core import Composition

    from crysvcd.datasets import data_path

    ref = pd.read_csv(data_path("kappa103_phonondb_pbe.csv.gz"))
    ref = ref[ref["kappa_dft_phonondb_pbe_300K"] >= 100]
    known = {Composition(f).reduced_formula for f in ref["formula"]} | {"GeC"}
    print(f"known high-kappa formulas ({len(known)}: phononDB >= 100 W/mK, and GeC) generated:")
    for name, table in tables.items():
        formulas = pd.Series([Composition(f).reduced_formula if f else "" for f in
                              table["cell_formula"].fillna("")], index=table.index)  # fmt: skip
        found = table[formulas.isin(known)]
        stable = kept_stable(table)
        match = found.get("known_match", pd.Series(index=found.index)).fillna("")
        text = ", ".join(f"{formulas[i]} ({'stable' if stable[i] else 'not stable'}, "
                         f"{'matches pool ' + match[i] if match[i] else 'no pool match'})"
                         for i in found.index)  # fmt: skip
        print(f"  {name}: {len(found)} of {len(table)}{': ' + text if len(found) else ''}")


def per_round(tables: dict, count) -> pd.DataFrame:
    """``count`` of each run's rounds, printed."""
    rows = [{"run": name, "round": r, **count(part)}
            for name, table in tables.items() for r, part in table.groupby("round")]  # fmt: skip
    out = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.precision", 3):
        print(out.to_string(index=False))
    return out


def judge(out: pd.DataFrame, bar: str = "bar 2x", base: pd.DataFrame | None = None) -> None:
    """Each arm's share against the unconditioned one, by the issue's bar (``bar``: its
    name in the verdict; a prediction's verdict is not the bar's). ``base``: the
    unconditioned row to compare with, when not ``out``'s own (a bound's other side)."""
    bases = (out if base is None else base).query("run == 'unconditioned'").set_index("round")
    for _, row in out[out.run != "unconditioned"].iterrows():
        # a one-round unconditioned arm is every round's reference (the same budget a
        # round); one with rounds is compared round by round
        if len(bases) > 1 and row["round"] not in bases.index:
            print(f"{row['run']} round {row['round']}: no unconditioned round to compare with")
            continue
        base = bases.iloc[0] if len(bases) == 1 else bases.loc[row["round"]]
        ratio = row["share"] / base["share"] if base["share"] > 0 else float("inf")
        # a ratio of two small counts means nothing alone: the bar also needs the campaign's
        # excess to be significant (one-sided Fisher exact test, p < 0.05)
        table = [[row["hits"], row["with_value"] - row["hits"]],
                 [base["hits"], base["with_value"] - base["hits"]]]  # fmt: skip
        p = fisher_exact(table, alternative="greater").pvalue
        verdict = "met" if ratio >= 2 and p < 0.05 else "not established"
        print(f"{row['run']} round {row['round']}: {row['share']:.3f} "
              f"[{row['lo']:.3f}, {row['hi']:.3f}] (n={row['with_value']}) against "
              f"unconditioned {base['share']:.3f} [{base['lo']:.3f}, {base['hi']:.3f}] "
              f"(n={base['with_value']}): {ratio:.2f}x {ratio_interval(row, base)}, "
              f"Fisher p = {p:.2g}; {bar} {verdict}")  # fmt: skip


def ratio_interval(row: pd.Series, base: pd.Series) -> str:
    """The share ratio's 95 % interval (Katz log method, scipy), printed beside the two
    shares' own intervals: "at least twice" read on the ratio itself, with its uncertainty,
    rather than on one share's lower bound against the other's upper bound (far stricter).
    Undefined while either arm has no hits."""
    if not (row["hits"] and base["hits"]):
        return "[ratio interval undefined: an arm without hits]"
    rr = relative_risk(int(row["hits"]), int(row["with_value"]), int(base["hits"]),
                       int(base["with_value"]))  # fmt: skip
    ci = rr.confidence_interval(0.95)
    return f"[95 % {ci.low:.2f}-{ci.high:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("campaign", help="RUN, or RUN,RUN,... (replicates, pooled)")
    ap.add_argument("unconditioned", help="RUN, or RUN,RUN,... (replicates, pooled)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the figure and CSV")
    ap.add_argument("--stem", default=None,
                    help="their file name (default: the condition, dielectric_high)")  # fmt: skip
    ap.add_argument("--arm", action="append", default=[], metavar="NAME=RUN",
                    help="another arm of the same target, compared the same way")  # fmt: skip
    args = ap.parse_args()
    arms = {"campaign": args.campaign}
    for spec in args.arm:
        name, sep, run = spec.partition("=")
        if not sep or not name or name in ("campaign", "unconditioned"):
            raise SystemExit(f"--arm takes NAME=RUN with a new name, got {spec!r}")
        arms[name] = run
    pooled = {"unconditioned": load_pooled(args.unconditioned)}
    pooled.update({name: load_pooled(spec) for name, spec in arms.items()})
    tables = {name: table for name, (_, table, _) in pooled.items()}
    for name, (_, table, runs) in pooled.items():
        print(f"{name}: {len(runs)} run(s), seed(s) {sorted(table.seed.unique().tolist())}")
    target = pooled["campaign"][0].target_spec()
    for name, (cfg, _, runs) in pooled.items():
        other = cfg.target_spec()
        if (other.name, other.direction, other.threshold()) != (
            target.name, target.direction, target.threshold()
        ):  # fmt: skip
            raise SystemExit(f"{runs[0]} ({name}) has another target than the campaign: "
                             f"{other.condition} at {other.threshold():.3g}")  # fmt: skip
    sign = ">=" if target.direction == "high" else "<="
    print(f"target {target.condition}: {target.label} {sign} {target.threshold():.3g}; "
          f"MLIP {pooled['campaign'][0].mlip}")  # fmt: skip
    out = per_round(tables, lambda t: target_hits(t, target))
    judge(out)
    if target.name == "kappa":
        print("of every stable crystal, the screens' rejects counted as misses; unknown (over "
              "budget, failed, imaginary modes) counted as misses (lower bound):")  # fmt: skip
        lower = per_round(tables, lambda t: kappa_of_every_stable(t, target, False))
        print("... and unknown counted as hits (upper bound):")
        upper = per_round(tables, lambda t: kappa_of_every_stable(t, target, True))
        print("each arm's lower bound against the unconditioned lower bound, then against its "
              "upper bound (the strict reading):")  # fmt: skip
        judge(lower)
        judge(lower, base=upper)
        print("the composition surrogate's share (every stable crystal has it; a prediction "
              "on AFLOW-AGL's scale, not the bar):")  # fmt: skip
        judge(per_round(tables, lambda t: surrogate_hits(t, target)), "predicted 2x")
        print("the same over every generated crystal, stable or not:")
        all_crystals = per_round(tables, lambda t: surrogate_hits(t, target, stable_only=False))
        judge(all_crystals, "predicted 2x")
        if target.direction == "high":
            known_high_kappa(tables)
    if target.name == "dielectric":
        for cut in METAL_CUTS:
            print(f"with a stricter metal flag: crystals at P(gapped) < {cut} not counted "
                  f"(the shipped flag: < {METAL_BELOW}):")  # fmt: skip
            judge(per_round(tables, lambda t, cut=cut: hits_at_metal_cut(t, target, cut)))
    for name in arms:
        for run in pooled[name][2]:
            cand = run / "candidates.csv"
            if cand.exists():
                cols = ["rank", "formula", "space_group", "n_atoms", "e_above_hull",
                        "phonon_stable", "value", "reliable", "round"]  # fmt: skip
                top = pd.read_csv(cand)
                note = ""
                if target.name == "dielectric":
                    # judged again with this code's metal flag: the run's own may be older
                    metal = likely_metal(top.assign(cell_formula=top["formula"]))
                    top, note = top[~metal], f"; {int(metal.sum())} called metals now left out"
                top = top.head(5)
                print(f"top five candidates of {name} ({run}; stable first, then by the "
                      f"property{note}):")  # fmt: skip
                print(top[[c for c in cols if c in top]].to_string(index=False))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        series = {"training set": target.bundled()["target_value"].to_numpy()}
        series.update({name: usable_values(t, target).to_numpy() for name, t in tables.items()})
        stem = args.stem or target.condition
        property_histogram(series, target, args.out / f"{stem}.png",
                           f"{target.label}: training set and each arm")  # fmt: skip
        out.to_csv(args.out / f"{stem}.csv", index=False)
        print(f"figure: {args.out / (stem + '.png')}")


if __name__ == "__main__":
    main()
