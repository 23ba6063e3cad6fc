"""``crysvcd report RUN_DIR``: one self-contained HTML page for a generate, evaluate or loop
folder.

The page holds everything it shows: figures as inline PNGs (matplotlib), the table of
crystals (sortable by any column, filterable), and a 3D view of any crystal (3Dmol.js,
BSD-3-Clause, from the npm registry, inlined from ``vendor/``), so it opens from disk with
no network. A small script checks on load that every figure decoded and the viewer drew,
and records the result (and any script error) in ``document.body.dataset.report``, which
the test reads from headless Chromium.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from crysvcd.runinfo import atomic_write_text

log = logging.getLogger(__name__)
VENDOR = Path(__file__).resolve().parent / "vendor"
COLUMNS = (
    "key", "round", "formula", "space_group", "n_atoms", "density", "valid", "invalid_reason",
    "status", "e_above_hull", "converged", "phonon_stable", "phonon_min_frequency_thz",
    "kappa", "dielectric_total", "known_match", "mp_formula_known", "error",
)  # fmt: skip


def collect(run_dir: Path) -> tuple[pd.DataFrame, dict[str, str], dict]:
    """(table of crystals, CIF per key, run facts) of a generate, evaluate or loop folder."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from crysvcd.evaluate.store import ResultStore

    facts: dict = {"folder": str(run_dir)}
    cifs: dict[str, str] = {}
    if (run_dir / "loop.json").exists():
        facts["kind"] = "loop"
        table = pd.read_csv(run_dir / "structures.csv", keep_default_na=False, na_values=[""])
        facts["config"] = json.loads((run_dir / "loop.json").read_text())["config"]
    elif (run_dir / "summary.csv").exists():
        facts["kind"] = "generate"
        table = pd.read_csv(run_dir / "summary.csv", keep_default_na=False, na_values=[""])
        table["key"] = [
            Path(str(f)).stem if isinstance(f, str) and f else "" for f in table["file"]
        ]
        if (run_dir / "labels.csv").exists():
            facts["kind"] = "generate + evaluate"
            labels = pd.read_csv(run_dir / "labels.csv")
            table = table.merge(labels, on="key", how="left", suffixes=("", "_label"))
        for f, key in zip(table["file"], table["key"]):
            if isinstance(f, str) and f and (run_dir / f).exists():
                cifs[key] = (run_dir / f).read_text()
    elif (run_dir / "labels.db").exists():
        facts["kind"] = "evaluate"
        table = ResultStore(run_dir / "labels.db").frame()
    else:
        raise ValueError(f"{run_dir}: no summary.csv, labels.db or loop.json: not a crysvcd run")
    db = run_dir / "labels.db"
    if db.exists():  # relaxed structures win over generated ones: they are what was labelled
        for key, row in ResultStore(db).rows().items():
            if row.natoms:
                cifs[key] = AseAtomsAdaptor.get_structure(row.toatoms()).to(fmt="cif")
    if "formula" not in table and "reduced_formula" in table:
        table["formula"] = table["reduced_formula"]
    run = run_dir / "run.json"
    if run.exists():
        record = json.loads(run.read_text())
        facts.update(time=record.get("time"), command=" ".join(record.get("command", [])))
        facts["versions"] = record.get("versions")
    return table, cifs, facts


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def figures(table: pd.DataFrame, run_dir: Path) -> list[tuple[str, str]]:
    """(caption, base64 PNG) of every figure the table supports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    groups = (
        [(f"round {r}", part) for r, part in table.groupby("round")]
        if "round" in table else [("all", table)]
    )  # fmt: skip
    for column, xlabel, bins, caption in (
        ("e_above_hull", "energy above the MP hull (eV/atom)", np.linspace(-0.3, 1.0, 40),
         "Energy above the hull (the paper's Fig. 3b); dashed: 0.1 eV/atom"),
        ("phonon_min_frequency_thz", "lowest phonon frequency (THz)", np.linspace(-3, 3, 40),
         "Lowest phonon frequency (Fig. 3c); negative = imaginary"),
    ):  # fmt: skip
        if column not in table or not pd.to_numeric(table[column], errors="coerce").notna().any():
            continue
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for name, part in groups:
            v = pd.to_numeric(part[column], errors="coerce").dropna().clip(bins[0], bins[-1])
            if len(v):
                ax.hist(v, bins=bins, histtype="step", lw=1.5, label=f"{name} (n={len(v)})")
        if column == "e_above_hull":
            ax.axvline(0.1, color="grey", ls="--", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("crystals")
        ax.legend(fontsize=8)
        fig.tight_layout()
        out.append((caption, _png(fig)))
    props = [c for c in ("density", "n_atoms", "kappa", "dielectric_total") if c in table]
    props = [c for c in props if pd.to_numeric(table[c], errors="coerce").notna().any()]
    if props:
        fig, axes = plt.subplots(1, len(props), figsize=(3 * len(props), 3), squeeze=False)
        for ax, c in zip(axes[0], props):
            ax.hist(pd.to_numeric(table[c], errors="coerce").dropna(), bins=25, color="#4a7ab5")
            ax.set_xlabel(c)
        fig.tight_layout()
        out.append(("Property distributions", _png(fig)))
    if "formula" in table:
        from pymatgen.core import Composition

        counts: dict[str, int] = {}
        for f in table["formula"].dropna():
            try:
                for el in Composition(str(f)).elements:
                    counts[el.symbol] = counts.get(el.symbol, 0) + 1
            except Exception:
                continue
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:30]
        if top:
            fig, ax = plt.subplots(figsize=(8, 3))
            ax.bar([k for k, _ in top], [v for _, v in top], color="#4a7ab5")
            ax.set_ylabel("crystals containing it")
            ax.tick_params(axis="x", labelsize=8)
            fig.tight_layout()
            out.append(("Element frequencies (30 most common)", _png(fig)))
    shares = run_dir / "shares.csv"
    if shares.exists():
        s = pd.read_csv(shares)
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for name in ("ehull_below_0.1", "ehull_below_0", "phonon_stable", "sun"):
            if name in s and s[name].notna().any():
                yerr = [s[name] - s[f"{name}_lo"], s[f"{name}_hi"] - s[name]]
                ax.errorbar(s["round"], s[name], yerr=yerr, marker="o", capsize=3, label=name)
        ax.set_xlabel("round")
        ax.set_xticks(s["round"])
        ax.set_ylabel("share (Wilson 95 % interval)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        fig.tight_layout()
        out.append(("Shares per round", _png(fig)))
    return out


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def render(table: pd.DataFrame, cifs: dict[str, str], facts: dict, figs) -> str:
    cols = [c for c in COLUMNS if c in table]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = "\n".join(
        f'<tr data-key="{html.escape(str(r.get("key", "")))}">'
        + "".join(f"<td>{_cell(r.get(c))}</td>" for c in cols)
        + "</tr>"
        for r in table.to_dict("records")
    )
    fig_html = "\n".join(
        f'<figure><img class="fig" alt="{html.escape(c)}" src="data:image/png;base64,{b}">'
        f"<figcaption>{html.escape(c)}</figcaption></figure>"
        for c, b in figs
    )
    meta = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
        for k, v in facts.items()
        if k in ("folder", "kind", "time", "command")
    )
    template = (VENDOR.parent / "page.html").read_text()
    return (
        template.replace("{{TITLE}}", html.escape(f"crysvcd report: {facts['folder']}"))
        .replace("{{META}}", meta)
        .replace("{{COUNT}}", str(len(table)))
        .replace("{{FIGURES}}", fig_html)
        .replace("{{HEAD}}", head)
        .replace("{{ROWS}}", rows)
        .replace("{{CIFS}}", json.dumps(cifs).replace("</", "<\\/"))
        .replace("{{VIEWER_JS}}", (VENDOR / "3Dmol-min.js").read_text())
    )


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of ``run_dir`` (default ``RUN_DIR/report.html``); returns its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such folder")
    out = Path(out) if out else run_dir / "report.html"
    # checked before any work; a browser shows a page without the suffix as plain text
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"{out}: the report is a web page; name it *.html")
    if not out.parent.is_dir():
        raise ValueError(f"{out}: folder {out.parent} does not exist")
    t0 = time.perf_counter()
    table, cifs, facts = collect(run_dir)
    page = render(table, cifs, facts, figures(table, run_dir))
    atomic_write_text(out, page)
    log.info("report of %d crystals in %.1f s: %s", len(table), time.perf_counter() - t0, out)
    return out
