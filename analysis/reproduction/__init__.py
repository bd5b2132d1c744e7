"""Fidelity to a reference and the paper's claims checked against a study."""
