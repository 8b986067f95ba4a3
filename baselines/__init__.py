"""Baselines as thin adapters on the shared harness (`pdm.methods.base.Method`)."""
