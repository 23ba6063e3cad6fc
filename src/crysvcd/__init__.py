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
]


def __getattr__(name: str):
    # Stage I pulls in torch and transformers: import it only when asked for.
    if name == "sample_formulas":
        from crysvcd.stage1.sample import sample_formulas

        return sample_formulas
    raise AttributeError(name)
