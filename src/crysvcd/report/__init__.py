"""One self-contained HTML page per run folder: figures, a sortable table, a 3D viewer."""

from crysvcd.report.build import build_report

__all__ = ["build_report"]
