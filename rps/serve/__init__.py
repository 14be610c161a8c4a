"""Subpackage: the one predictor, its scores, and the MLflow model around it."""
