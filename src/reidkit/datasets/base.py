"""The common types every dataset module returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DatasetError(ValueError):
    """A dataset root or list file is missing or malformed (the message names it)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One image: its path, person id and camera id.

    pid ``-1`` marks junk and ``0`` Market-1501 distractors; both keep their meaning here and the
    evaluator applies the protocol. ``extra`` holds optional fields (e.g. timestamp, frame).
    """

    path: str
    pid: int
    camid: int
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class SplitStats:
    images: int
    ids: int
    cameras: int


def split_stats(samples: Sequence[Sample]) -> SplitStats:
    """Images / distinct ids / distinct cameras of one split."""
    return SplitStats(
        images=len(samples),
        ids=len({s.pid for s in samples}),
        cameras=len({s.camid for s in samples}),
    )


@dataclass
class ReIDDataset:
    """Train / query / gallery lists of :class:`Sample` for one dataset on disk."""

    name: str
    root: Path
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    notes: str = ""

    def stats(self) -> dict[str, SplitStats]:
        return {
            "train": split_stats(self.train),
            "query": split_stats(self.query),
            "gallery": split_stats(self.gallery),
        }

    def num_train_pids(self) -> int:
        return len({s.pid for s in self.train})


def relabel(samples: Sequence[Sample]) -> list[Sample]:
    """Map the pids of a training split to 0..n-1 (sorted order), keeping everything else."""
    mapping = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    return [Sample(s.path, mapping[s.pid], s.camid, s.extra) for s in samples]


def holdout_split(train: Sequence[Sample], ids: int) -> tuple[list[Sample], list[Sample]]:
    """Split a training list into (kept, held out): the ``ids`` identities with the largest pids are
    held out (deterministic, so training with ``data.holdout_ids`` and ``reidkit eval --holdout``
    agree on the same people). Raises :class:`DatasetError` when fewer than ``ids + 1`` ids exist."""
    pids = sorted({s.pid for s in train if s.pid >= 0})
    if ids < 0 or ids >= len(pids):
        raise DatasetError(f"cannot hold out {ids} of {len(pids)} training identities: keep at least one")
    held = set(pids[len(pids) - ids :])
    return [s for s in train if s.pid not in held], [s for s in train if s.pid in held]


def holdout_query_gallery(
    held: Sequence[Sample], distractors: Sequence[Sample] = ()
) -> tuple[list[Sample], list[Sample]]:
    """Held-out identities as a re-id test: per identity and camera the first image (by path) is a
    query, every other image is gallery (the evaluator skips same-camera matches, as on Market).
    ``distractors`` (other people's images, e.g. the trained identities') join the gallery after them."""
    query: list[Sample] = []
    gallery: list[Sample] = []
    seen: set[tuple[int, int]] = set()
    for s in sorted(held, key=lambda s: (s.pid, s.camid, s.path)):
        key = (s.pid, s.camid)
        (gallery if key in seen else query).append(s)
        seen.add(key)
    gallery.extend(distractors)
    return query, gallery


def require_dir(path: Path, what: str, layout: str, env_hint: str = "REIDKIT_DATA") -> Path:
    """Return ``path`` if it is a directory, else raise a one-sentence :class:`DatasetError`."""
    if not path.is_dir():
        raise DatasetError(
            f"{what}: expected the folder {path} ({layout}); "
            f"set ${env_hint} or pass --root to point at the folder that contains it."
        )
    return path


JUNK_PID = -1


def drop_junk(samples: Sequence[Sample]) -> list[Sample]:
    """The samples whose pid is not junk (``-1``); Market distractors (pid ``0``) stay."""
    return [s for s in samples if s.pid != JUNK_PID]


def dataset_table(ds: ReIDDataset) -> list[tuple[str, int, int, int]]:
    """``(split, images, ids, cameras)`` rows for train, query and gallery (for printing)."""
    return [(split, st.images, st.ids, st.cameras) for split, st in ds.stats().items()]
