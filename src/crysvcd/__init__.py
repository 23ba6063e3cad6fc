"""crysvcd: valence-constrained crystal generation.

Data flow: chem (valence tokens) -> stage1 (compositions) -> stage2 (structures) -> evaluate.
"""

from crysvcd.chem.valence import (
    FormulaError,
    NoValidAssignmentError,
    ValenceAssignment,
    ValenceToken,
    label_valence,
)

__version__ = "0.1.0"

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
]

_LAZY = {
    "sample_formulas": "crysvcd.stage1.sample",
    "predict_structures": "crysvcd.stage2.sample",
    "generate": "crysvcd.pipeline",
    "GenerateConfig": "crysvcd.pipeline",
}


def __getattr__(name: str):
    # The models pull in torch and transformers: import them only when asked for.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
