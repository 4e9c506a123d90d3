"""Synthetic folders in the benchmarks' on-disk formats, to try a pipeline (or measure a loader)
before the real data are at hand: :func:`write_waterbirds_folder` writes ``metadata.csv`` and one
JPEG per row exactly as Sagawa et al.'s Waterbirds does, so ``load("waterbirds", data_dir=...)``
reads it as it reads the real one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["write_waterbirds_folder"]


def write_waterbirds_folder(root: str | Path, n: int = 64, size: int = 48, *, seed: int = 0, quality: int = 90,
                            progress: Callable[[int, int], None] | None = None) -> Path:
    """A Waterbirds-format folder of ``n`` JPEGs of ``size`` x ``size`` (``metadata.csv`` with
    ``img_id,img_filename,y,split,place``; images under ``<k>.Bird/``): the bird (``y``) is a
    central square (yellow for water birds, brown for land birds), the place a noisy green (land) or
    blue (water) background. In train the place agrees with the bird for 3 of every 4 examples of
    each class, in val and test for half, so every (y, place) group is in every split; splits 0/1/2
    in the ratio 2:1:1. Returns ``root``."""
    from PIL import Image

    if n < 16:
        raise ValueError(f"n must be >= 16 (every group in every split), got {n}.")
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["img_id,img_filename,y,split,place"]
    s = size // 3
    for i in range(n):
        split = (0, 0, 1, 2)[i % 4]
        y = (i // 4) % 2
        if split == 0:
            place = y if (i // 8) % 4 else 1 - y
        else:
            place = (i // 8) % 2
        img = np.empty((size, size, 3), dtype=np.float32)
        img[:] = (40, 120, 40) if place == 0 else (40, 60, 160)
        img += rng.normal(0, 12, img.shape).astype(np.float32)
        img[s:2 * s, s:2 * s] = (220, 200, 40) if y else (150, 90, 60)
        name = f"{i % 200:03d}.Bird/img_{i:06d}.jpg"
        (root / name).parent.mkdir(exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name, quality=quality)
        rows.append(f"{i},{name},{y},{split},{place}")
        if progress is not None and (i + 1) % 500 == 0:
            progress(i + 1, n)
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root
