"""The product's one crop policy, without TensorFlow, so live.py can use it before loading it.

Everything the model sees is the largest centred square of an image, resized: a 300x200
photo is cropped, never squashed. Training and testing images go through it when they are
loaded (``rps.images.fit``), any input to the saved model through its first layer
(``rps.images.square_resizer``, which crops the same square), and live.py's frames through
it wherever the region of interest does not fit.
"""

from __future__ import annotations


def centre_square(height: int, width: int) -> tuple[int, int, int]:
    """The largest centred square of a height x width image, as (top, left, side)."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side
