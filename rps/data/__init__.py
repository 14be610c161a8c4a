"""Subpackage: images in, from folders, tfds, cameras and videos, decoded and cropped one way."""
