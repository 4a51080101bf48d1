"""DukeMTMC-reID (Zheng et al., ICCV 2017).

``dukemtmc-reid/DukeMTMC-reID/`` (or ``DukeMTMC-reID/``) holding ``bounding_box_train/``,
``query/`` and ``bounding_box_test/``; names like ``0001_c2_f0046182.jpg`` (pid, camera 1-8,
frame). Expected: train 16,522 / 702 ids, query 2,228 / 702, gallery 17,661 / 1,110.
"""

from __future__ import annotations

import os

from reidkit.datasets._common import MARKET_SPLITS, load_market_style
from reidkit.datasets.base import ReIDDataset

NAME = "dukemtmc"
FOLDERS = ("dukemtmc-reid/DukeMTMC-reID", "DukeMTMC-reID", "dukemtmc-reid", "dukemtmc")
SPLITS = MARKET_SPLITS
LAYOUT = "dukemtmc-reid/DukeMTMC-reID/ with bounding_box_train/, query/ and bounding_box_test/"
EXAMPLE = "0001_c2_f0046182.jpg"


def load(root: str | os.PathLike[str] | None = None) -> ReIDDataset:
    """Load DukeMTMC-reID from ``root`` (the folder holding ``dukemtmc-reid/``, or the release)."""
    return load_market_style(root, NAME, FOLDERS, "DukeMTMC-reID", LAYOUT, EXAMPLE)
