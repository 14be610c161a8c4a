"""The product's one crop policy, without TensorFlow, so live.py can use it before loading it.

Everything the model sees is the largest centred square of an image, resized: a 300x200
photo is cropped, never squashed. Training and testing images go through it when they are
loaded (``rps.data.images.fit_square``), any input to the saved model through its first layer
(``rps.data.images.square_resizer``, which crops the same square), and live.py's frames through
it wherever the region of interest does not fit.

Where a hand is found (``roi.find=hand``), an image model sees the square around the hand
instead (:func:`hand_square`).
"""

from __future__ import annotations

import cv2
import numpy as np


def centre_square(height: int, width: int) -> tuple[int, int, int]:
    """The largest centred square of a height x width image, as (top, left, side)."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


# The renders' side over the extent of their hand's landmarks: median 1.6 over 60 renders.
HAND_SCALE = 1.6


def hand_square(points: np.ndarray) -> tuple[int, int, int]:
    """The square an image model sees of a found hand, as (top, left, side): centred on its
    landmarks (pixels, (21, 2+)) and ``HAND_SCALE`` times their extent, so the hand fills it
    as a render's hand fills its frame. It may reach past the image's edges."""
    low, high = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    side = max(16, round(HAND_SCALE * float((high - low).max())))
    x, y = (low + high) / 2
    return round(y - side / 2), round(x - side / 2), side


def cut(image: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """The square of ``image`` at (top, left), its edge pixels repeated where it leaves it."""
    height, width = image.shape[:2]
    pads = (max(0, -top), max(0, top + side - height), max(0, -left), max(0, left + side - width))
    if any(pads):
        image = cv2.copyMakeBorder(image, *pads, cv2.BORDER_REPLICATE)
        top, left = top + pads[0], left + pads[2]
    return image[top : top + side, left : left + side]
