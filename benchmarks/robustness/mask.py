"""The hand's mask, estimated from the renders' near-white background.

The test renders show a hand on a white backdrop with soft grey shading. Backdrop pixels are
bright and colourless (shadows are darker, but still grey), while skin, even pale skin, has
some colour. So a pixel is backdrop when it is both unsaturated and not dark.
"""

from __future__ import annotations

import cv2
import numpy as np

# Saturation ramps from backdrop (at or below SAT_BACKDROP) to hand (at or above SAT_HAND);
# value ramps from hand (at or below VALUE_HAND: too dark for the lit backdrop) to backdrop.
SAT_BACKDROP, SAT_HAND = 0.05, 0.11
VALUE_HAND, VALUE_BACKDROP = 0.45, 0.6
SPECK = 0.02  # hand parts smaller than this share of the largest part are noise
HOLE = 0.002  # enclosed backdrop smaller than this share of the image is a highlight
EDGE_SIGMA = 1.2  # pixels of soft edge, so a composite has no jagged outline


def _ramp(x: np.ndarray, start: float, end: float) -> np.ndarray:
    return np.clip((x - start) / (end - start), 0.0, 1.0)


def hand_alpha(rgb: np.ndarray) -> np.ndarray:
    """float32 HxW alpha of one HxWx3 uint8 render: 1 on the hand, 0 on the backdrop."""
    x = rgb.astype(np.float32) / 255.0
    value = x.max(axis=-1)
    saturation = (value - x.min(axis=-1)) / np.maximum(value, 1e-6)
    backdrop = _ramp(saturation, SAT_HAND, SAT_BACKDROP) * _ramp(value, VALUE_HAND,
                                                                   VALUE_BACKDROP)
    hand = _clean(backdrop < 0.5)
    # Eroding first keeps the white fringe of the render out of the soft edge.
    hand = cv2.erode(hand.astype(np.uint8), np.ones((3, 3), np.uint8))
    return cv2.GaussianBlur(hand.astype(np.float32), (0, 0), EDGE_SIGMA)


def _clean(hand: np.ndarray) -> np.ndarray:
    """Drop specks of colour on the backdrop and fill small backdrop-coloured holes."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hand.astype(np.uint8), 8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    if not len(areas):
        return hand
    keep = np.flatnonzero(areas >= SPECK * areas.max()) + 1
    hand = np.isin(labels, keep)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((~hand).astype(np.uint8), 4)
    h, w = hand.shape
    for index in range(1, count):
        x, y, bw, bh, area = stats[index]
        enclosed = x > 0 and y > 0 and x + bw < w and y + bh < h
        if enclosed and area < HOLE * h * w:
            hand[labels == index] = True
    return hand
