"""Stage II: crystal-structure diffusion given the composition (DiffCSP-style)."""
