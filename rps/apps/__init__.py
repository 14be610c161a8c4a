"""Subpackage: live.py, evaluate.py and ensemble.py: the apps besides training."""
