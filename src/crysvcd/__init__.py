"""crysvcd: valence-constrained crystal generation.

Data flow: chem (valence tokens) -> stage1 (compositions) -> stage2 (structures) ->
evaluate (MLIP labels) -> loop (fine-tune on the labels) -> report.
"""

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

# Everything is imported on first use: `import crysvcd.training` must not pull in pymatgen
# (the GPU machines that train Stage II have torch and numpy only).
_LAZY = {
    "FormulaError": "crysvcd.chem.valence",
    "NoValidAssignmentError": "crysvcd.chem.valence",
    "ValenceAssignment": "crysvcd.chem.valence",
    "ValenceToken": "crysvcd.chem.valence",
    "label_valence": "crysvcd.chem.valence",
    "sample_formulas": "crysvcd.stage1.sample",
    "predict_structures": "crysvcd.stage2.sample",
    "generate": "crysvcd.pipeline",
    "GenerateConfig": "crysvcd.config",
    "evaluate": "crysvcd.evaluate.runner",
    "EvaluateConfig": "crysvcd.evaluate.settings",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
