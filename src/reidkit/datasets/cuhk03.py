"""CUHK03-NP (Zhong et al., CVPR 2017 "new protocol": 767 train / 700 test ids).

``cuhk03-np/{labeled,detected}/`` holding ``bounding_box_train/``, ``query/`` and
``bounding_box_test/``; names like ``0001_c1_1.png`` (pid, camera 1-2, index). Expected:
labeled train 7,368 / query 1,400 / gallery 5,328; detected 7,365 / 1,400 / 5,332.
The original ``cuhk-03.mat`` release is not read: convert it to CUHK03-NP first.
"""

from __future__ import annotations

import os
from pathlib import Path

from reidkit.datasets._common import load_market_style
from reidkit.datasets.base import DatasetError, ReIDDataset

NAME = "cuhk03"
VARIANTS = ("labeled", "detected")
EXAMPLE = "0001_c1_1.png"


def load(root: str | os.PathLike[str] | None = None, variant: str = "labeled") -> ReIDDataset:
    """Load CUHK03-NP ``variant`` ("labeled" or "detected") from ``root``.

    ``root`` is the folder holding ``cuhk03-np/``, ``cuhk03-np/`` itself, or the variant folder.
    """
    if variant not in VARIANTS:
        raise DatasetError(f"cuhk03: variant must be 'labeled' or 'detected', not {variant!r}.")
    if root is not None and Path(root).name in VARIANTS and Path(root).name != variant:
        raise DatasetError(f"cuhk03: root {root} is the {Path(root).name} variant, not {variant}.")
    folders = tuple(
        f"{parent}{variant}" for parent in ("cuhk03-np/", "cuhk03_np/", "cuhk03/cuhk03-np/", "")
    )
    return load_market_style(root, NAME, "CUHK03-NP", EXAMPLE, folders, notes=f"CUHK03-NP {variant}")
