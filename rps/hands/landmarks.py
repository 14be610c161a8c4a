"""A hand's 21 landmarks as features that do not depend on where the hand is, how big it is,
which way it points, or which hand it is; and augmentation in landmark space.

Landmarks follow MediaPipe's order: 0 the wrist, then four per finger from its base to its
tip (thumb 1-4, index 5-8, middle 9-12, ring 13-16, little 17-20).
"""

from __future__ import annotations

import numpy as np

WRIST = 0
FINGERS = np.array(
    [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16], [17, 18, 19, 20]]
)
MIDDLE_BASE, INDEX_BASE, RING_BASE, LITTLE_BASE = 9, 5, 13, 17
# 63 normalised coordinates, then per finger its extension, two bends and (but the little
# finger) its spread from the next one.
SIZE = 63 + 5 + 10 + 4


def normalised(points: np.ndarray) -> np.ndarray:
    """(N, 21, 3) landmarks moved so the wrist is at the origin, turned in the image plane so
    the middle finger's base lies straight up (-y), scaled so it lies at distance 1, and
    mirrored so the index finger's base is right of the little finger's: a left hand and a
    right hand, or a palm and a back, of the same gesture look alike."""
    points = np.asarray(points, np.float64) - points[:, WRIST : WRIST + 1]
    up = points[:, MIDDLE_BASE, :2]
    length = np.maximum(np.linalg.norm(up, axis=1), 1e-9)
    # Rotate each hand by the angle that takes ``up`` to (0, -1).
    cos, sin = -up[:, 1] / length, -up[:, 0] / length
    x = cos[:, None] * points[:, :, 0] - sin[:, None] * points[:, :, 1]
    y = sin[:, None] * points[:, :, 0] + cos[:, None] * points[:, :, 1]
    turned = np.stack([x, y, points[:, :, 2]], axis=-1) / length[:, None, None]
    mirror = turned[:, INDEX_BASE, 0] < turned[:, LITTLE_BASE, 0]
    turned[mirror, :, 0] *= -1
    return turned


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-9)


def features(points: np.ndarray) -> np.ndarray:
    """(N, 21, 3) landmarks in any position, size, rotation or hand -> (N, SIZE) float32:
    the normalised coordinates, then each finger's tip-to-wrist over base-to-wrist distance
    (extended or curled), the cosine of its bend at its two middle joints, and the cosine of
    the angle between neighbouring fingers (spread, as in scissors)."""
    hand = normalised(points)
    joints = hand[:, FINGERS]  # (N, 5, 4, 3)
    extension = np.linalg.norm(joints[:, :, 3], axis=-1) / np.maximum(
        np.linalg.norm(joints[:, :, 0], axis=-1), 1e-9
    )
    bones = _unit(
        np.diff(np.concatenate([np.zeros_like(joints[:, :, :1]), joints], axis=2), axis=2)
    )  # wrist->base, base->1, 1->2, 2->tip
    bends = np.concatenate(
        [(bones[:, :, 1] * bones[:, :, 2]).sum(-1), (bones[:, :, 2] * bones[:, :, 3]).sum(-1)],
        axis=1,
    )
    directions = _unit(joints[:, :, 3] - joints[:, :, 0])
    spread = (directions[:, :-1] * directions[:, 1:]).sum(-1)
    return np.concatenate([hand.reshape(len(hand), -1), extension, bends, spread], axis=1).astype(
        np.float32
    )


def turned(
    points: np.ndarray,
    pitch: np.ndarray | float,
    yaw: np.ndarray | float,
) -> np.ndarray:
    """(N, 21, 3) landmarks of hands turned out of the image plane about their centre, each by
    its own angles in degrees: ``pitch`` about the image's horizontal axis (fingertips toward
    the camera), then ``yaw`` about its vertical axis (toward edge-on)."""
    points = np.asarray(points, np.float64)
    centre = points.mean(axis=1, keepdims=True)
    out = points - centre
    a, b = (
        np.radians(np.broadcast_to(pitch, len(points))),
        np.radians(np.broadcast_to(yaw, len(points))),
    )
    ca, sa, cb, sb = (v[:, None] for v in (np.cos(a), np.sin(a), np.cos(b), np.sin(b)))
    y, z = out[:, :, 1] * ca - out[:, :, 2] * sa, out[:, :, 1] * sa + out[:, :, 2] * ca
    out[:, :, 1], out[:, :, 2] = y, z
    x, z = out[:, :, 0] * cb + out[:, :, 2] * sb, -out[:, :, 0] * sb + out[:, :, 2] * cb
    out[:, :, 0], out[:, :, 2] = x, z
    return out + centre


def augmented(
    points: np.ndarray, jitter: float, tilt: float, rng: np.random.Generator
) -> np.ndarray:
    """The landmarks as another view of the same hand: each point moved by Gaussian noise of
    ``jitter`` times the hand's size (landmark error), and the hand turned out of the image
    plane by up to ``tilt`` degrees about each in-plane axis (seen from another angle).
    Turning in the plane, scaling and mirroring change nothing that :func:`features` sees."""
    points = np.asarray(points, np.float64)
    size = np.linalg.norm(points[:, MIDDLE_BASE] - points[:, WRIST], axis=-1)
    out = points
    if tilt:
        out = turned(points, *rng.uniform(-tilt, tilt, (2, len(points))))
    if jitter:
        out = out + rng.normal(0.0, 1.0, out.shape) * (jitter * size)[:, None, None]
    return out
