"""Occluded-DukeMTMC (Miao et al., ICCV 2019): DukeMTMC-reID re-split with occluded queries.

``Occluded_Duke/`` holding ``bounding_box_train/``, ``query/`` and ``bounding_box_test/``; names as
DukeMTMC-reID (``0001_c2_f0046182.jpg``). Expected: train 15,618 / 702 ids, query 2,210 / 519,
gallery 17,661 / 1,110.
"""

from __future__ import annotations

import os

from reidkit.datasets import dukemtmc
from reidkit.datasets._common import load_market_style
from reidkit.datasets.base import ReIDDataset

NAME = "occluded_duke"
FOLDERS = ("Occluded_Duke", "occluded_duke", "Occluded-DukeMTMC", "occluded-dukemtmc")
SPLITS = dukemtmc.SPLITS
LAYOUT = "Occluded_Duke/ with bounding_box_train/, query/ and bounding_box_test/"


def load(root: str | os.PathLike[str] | None = None) -> ReIDDataset:
    """Load Occluded-DukeMTMC from ``root`` (the folder holding ``Occluded_Duke/``, or it)."""
    return load_market_style(root, NAME, FOLDERS, "Occluded-DukeMTMC", LAYOUT, dukemtmc.EXAMPLE)
