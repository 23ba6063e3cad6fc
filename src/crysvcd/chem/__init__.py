"""Chemistry of valence tokens: oxidation states, electron configurations, the labeller."""

from crysvcd.chem.electrons import Configuration, configuration
from crysvcd.chem.oxidation import MAX_Z, allowed_states, is_alloy_forming
from crysvcd.chem.valence import (
    NoValidAssignmentError,
    ValenceAssignment,
    ValenceToken,
    label_valence,
)

__all__ = [
    "MAX_Z",
    "Configuration",
    "NoValidAssignmentError",
    "ValenceAssignment",
    "ValenceToken",
    "allowed_states",
    "configuration",
    "is_alloy_forming",
    "label_valence",
]
