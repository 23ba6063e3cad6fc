"""Stage I: the valence-constrained composition language model."""
