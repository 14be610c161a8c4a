"""Subpackage: typed config schemas, their composition and what a job knows of Hydra."""
