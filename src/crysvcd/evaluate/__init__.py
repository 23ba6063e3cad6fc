"""Labels for generated crystals: MLIP relaxation, energy above hull, phonons, kappa, epsilon."""
