"""Subpackage: the Keras classifier: backbones, heads, augmentation, optimizers."""
