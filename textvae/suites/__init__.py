"""Reproduction suites: recipes × seeds trained, evaluated and reported by `textvae reproduce`."""
