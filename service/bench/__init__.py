"""Benches: every method at every target and seed, their reports, and their cells on Ray."""
