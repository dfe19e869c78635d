"""BIWI head pose (chapter 6): the centre of the head in pixels, from the pose file and the camera calibration.

Each frame `XX/frame_00003_rgb.jpg` has `XX/frame_00003_pose.txt`: a 3x3 rotation, then the head's
translation (x, y, z in millimetres from the camera). The folder's `rgb.cal` starts with the RGB camera's 3x3
intrinsic matrix; projecting the translation through it gives the centre in pixels.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


def _rows(path: Path) -> list[list[float]]:
    """Whitespace-separated numbers, one list per non-empty line."""
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]


@functools.lru_cache(maxsize=64)
def intrinsics(calibration: Path) -> np.ndarray:
    """The first three rows of rgb.cal: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]."""
    return np.array(_rows(calibration)[:3], dtype=np.float64)


def head_centre(image: Path) -> np.ndarray:
    """frame_XXXXX_rgb.jpg -> (x, y) of the head centre in the image's pixels."""
    pose = image.with_name(image.name.replace("_rgb.jpg", "_pose.txt"))
    translation = np.array(_rows(pose)[-1], dtype=np.float64)  # the last line: x y z in mm
    camera = intrinsics(image.parent / "rgb.cal")
    x = translation[0] * camera[0, 0] / translation[2] + camera[0, 2]
    y = translation[1] * camera[1, 1] / translation[2] + camera[1, 2]
    return np.array([x, y], dtype=np.float32)
