"""The releases in the Market-1501 layout, one row each of :data:`RELEASES`, all loaded the same way
(:func:`reidkit.datasets._common.load_market_style`): a folder holding ``bounding_box_train/``,
``query/`` and ``bounding_box_test/`` (gallery), images named ``<pid>_c<camera>...``.

- **Market-1501** (Zheng et al., ICCV 2015), official release layout: ``market1501/`` (or
  ``Market-1501-v15.09.15/``); names like ``0002_c1s1_000451_03.jpg`` (pid, camera 1-6, sequence,
  frame, box). The 38 ``*.jpg.jpg`` files parse as well. The gallery keeps pid ``-1`` (junk) and ``0``
  (distractors); see :func:`reidkit.datasets.base.drop_junk`.
- **DukeMTMC-reID** (Zheng et al., ICCV 2017): ``dukemtmc-reid/DukeMTMC-reID/`` (or
  ``DukeMTMC-reID/``); names like ``0001_c2_f0046182.jpg`` (pid, camera 1-8, frame). Expected: train
  16,522 / 702 ids, query 2,228 / 702, gallery 17,661 / 1,110.
- **Occluded-DukeMTMC** (Miao et al., ICCV 2019), DukeMTMC-reID re-split with occluded queries:
  ``Occluded_Duke/``; names as DukeMTMC-reID. Expected: train 15,618 / 702 ids, query 2,210 / 519,
  gallery 17,661 / 1,110.

CUHK03-NP has the same layout under a variant folder (see :mod:`reidkit.datasets.cuhk03`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from reidkit.datasets._common import load_market_style
from reidkit.datasets.base import ReIDDataset


@dataclass(frozen=True)
class MarketStyleRelease:
    """One release: its registry ``name``, what errors call it, an ``example`` file name, the
    ``folders`` it may sit in under the data root (the first is the one errors describe), and whether
    its notes count the junk and distractor images kept."""

    name: str
    what: str
    example: str
    folders: tuple[str, ...]
    count_junk: bool = False

    def load(self, root: str | os.PathLike[str] | None = None) -> ReIDDataset:
        """Load the release from ``root`` (the folder holding its folder, or the release itself)."""
        return load_market_style(root, self.name, self.what, self.example, self.folders, count_junk=self.count_junk)


DUKE_EXAMPLE = "0001_c2_f0046182.jpg"
RELEASES: dict[str, MarketStyleRelease] = {
    r.name: r
    for r in (
        MarketStyleRelease("market1501", "Market-1501", "0002_c1s1_000451_03.jpg",
                           ("market1501", "Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "Market-1501"),
                           count_junk=True),
        MarketStyleRelease("dukemtmc", "DukeMTMC-reID", DUKE_EXAMPLE,
                           ("dukemtmc-reid/DukeMTMC-reID", "DukeMTMC-reID", "dukemtmc-reid", "dukemtmc")),
        MarketStyleRelease("occluded_duke", "Occluded-DukeMTMC", DUKE_EXAMPLE,
                           ("Occluded_Duke", "occluded_duke", "Occluded-DukeMTMC", "occluded-dukemtmc")),
    )
}  # fmt: skip
