"""crysvcd: valence-constrained crystal generation.

Data flow: chem (valence tokens) -> stage1 (compositions) -> stage2 (structures) ->
evaluate (MLIP labels) -> loop (fine-tune on the labels) -> report.
"""

from crysvcd.chem.valence import (
    FormulaError,
    NoValidAssignmentError,
    ValenceAssignment,
    ValenceToken,
    label_valence,
)

__version__ = "0.2.0"

__all__ = [
    "FormulaError",
    "NoValidAssignmentError",
    "ValenceAssignment",
    "ValenceToken",
    "__version__",
    "label_valence",
    "sample_formulas",
    "predict_structures",
    "generate",
    "GenerateConfig",
    "evaluate",
    "EvaluateConfig",
]

_LAZY = {
    "sample_formulas": "crysvcd.stage1.sample",
    "predict_structures": "crysvcd.stage2.sample",
    "generate": "crysvcd.pipeline",
    "GenerateConfig": "crysvcd.config",
    "evaluate": "crysvcd.evaluate.runner",
    "EvaluateConfig": "crysvcd.evaluate.settings",
}


def __getattr__(name: str):
    # The models pull in torch and transformers: import them only when asked for.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
