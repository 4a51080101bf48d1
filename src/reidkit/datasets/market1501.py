"""Market-1501 (Zheng et al., ICCV 2015), official release layout.

``market1501/`` (or ``Market-1501-v15.09.15/``) holding ``bounding_box_train/``,
``bounding_box_test/`` (gallery) and ``query/``; names like ``0002_c1s1_000451_03.jpg``
(pid, camera 1-6, sequence, frame, box). The 38 ``*.jpg.jpg`` files parse as well. The gallery
keeps pid ``-1`` (junk) and ``0`` (distractors); see :func:`reidkit.datasets.base.drop_junk`.
"""

from __future__ import annotations

import os

from reidkit.datasets._common import MARKET_SPLITS, load_market_style
from reidkit.datasets.base import ReIDDataset

NAME = "market1501"
FOLDERS = ("market1501", "Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "Market-1501")
SPLITS = MARKET_SPLITS
LAYOUT = "market1501/ with bounding_box_train/, query/ and bounding_box_test/"
EXAMPLE = "0002_c1s1_000451_03.jpg"


def load(root: str | os.PathLike[str] | None = None) -> ReIDDataset:
    """Load Market-1501 from ``root`` (the folder holding ``market1501/``, or that folder)."""
    return load_market_style(root, NAME, FOLDERS, "Market-1501", LAYOUT, EXAMPLE, count_junk=True)
