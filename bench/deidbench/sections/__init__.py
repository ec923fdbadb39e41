"""The benchmark's sections, one module each; ``deidbench.main`` runs them in order."""
