"""Subpackage: MLflow runs, sweeps and the figures they log."""
