"""Subpackage: one training job, from a composed config to its outputs and run."""
