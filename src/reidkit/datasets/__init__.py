"""Standard ReID datasets and custom data, all returned as :class:`ReIDDataset`.

>>> ds = get_dataset("market1501")             # reads $REIDKIT_DATA/market1501
>>> ds = get_dataset("cuhk03", "/data", variant="detected")
>>> ds = get_dataset("msmt17", version=2, combine_val=False)

Every loader keeps the dataset's own query/gallery pids (``-1`` junk and ``0`` Market distractors
included; the evaluator applies the protocol) and, by default, relabels the training pids to
0..n-1 (the dataset's pid stays in ``Sample.extra["orig_pid"]``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

from reidkit.datasets import cuhk03, folder, msmt17
from reidkit.datasets._common import relabel_keep_origin
from reidkit.datasets.base import (
    JUNK_PID,
    DatasetError,
    ReIDDataset,
    Sample,
    SplitStats,
    dataset_table,
    drop_junk,
    relabel,
    split_stats,
)
from reidkit.datasets.folder import validate
from reidkit.datasets.market_style import RELEASES

_LOADERS: dict[str, Callable[..., ReIDDataset]] = {
    **{name: release.load for name, release in RELEASES.items()},  # market1501, dukemtmc, occluded_duke
    "cuhk03": cuhk03.load,
    "msmt17": msmt17.load,
    "folder": folder.load,
}
DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)
# Lookup keys are lower case without "-", "_" or spaces.
_ALIASES = {
    **{n.replace("_", ""): n for n in DATASET_NAMES},
    "market": "market1501",
    "duke": "dukemtmc",
    "dukemtmcreid": "dukemtmc",
    "occludeddukemtmc": "occluded_duke",
    "cuhk03np": "cuhk03",
    "custom": "folder",
}
_VALIDATED = frozenset({"folder"})

__all__ = [
    "DATASET_NAMES",
    "JUNK_PID",
    "DatasetError",
    "ReIDDataset",
    "Sample",
    "SplitStats",
    "dataset_options",
    "dataset_table",
    "drop_junk",
    "get_dataset",
    "relabel",
    "split_stats",
    "validate",
]


def canonical_name(name: str) -> str:
    """The registry name for ``name``, ignoring case, ``-`` and ``_`` (``Market-1501``, ``duke``)."""
    key = _ALIASES.get("".join(c for c in name.lower() if c not in "-_ "))
    if key is None:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}.")
    return key


def dataset_options(name: str) -> dict[str, object]:
    """The dataset-specific options of ``name`` with their defaults (e.g. cuhk03's ``variant``)."""
    params = list(inspect.signature(_LOADERS[canonical_name(name)]).parameters.values())[1:]
    return {p.name: p.default for p in params}


def get_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    relabel_train: bool = True,
    keep_junk: bool = True,
    **options: object,
) -> ReIDDataset:
    """Load dataset ``name`` (one of :data:`DATASET_NAMES`) from ``root``.

    ``root`` is the folder holding the dataset folder (default ``$REIDKIT_DATA``) or the dataset
    folder itself. ``relabel_train`` maps train pids to 0..n-1; ``keep_junk=False`` drops pid -1
    from query and gallery. ``options`` are per dataset: cuhk03 ``variant="labeled"|"detected"``,
    msmt17 ``version=1|2`` and ``combine_val`` (train includes ``list_val.txt``).
    """
    key = canonical_name(name)
    allowed = dataset_options(key)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) if allowed else "no options"
        raise DatasetError(f"{key}: unknown option(s) {', '.join(unknown)}; it accepts {accepted}.")
    ds = _LOADERS[key](root, **options)
    notes = [ds.notes] if ds.notes else []
    if relabel_train and ds.train:
        ds.train = relabel_keep_origin(ds.train)
        notes.append(f"train pids relabelled to 0..{ds.num_train_pids() - 1}")
    if not keep_junk:
        ds.query, ds.gallery = drop_junk(ds.query), drop_junk(ds.gallery)
        notes.append("junk (pid -1) dropped from query and gallery")
    if key in _VALIDATED:
        notes += [f"warning: {w}" for w in validate(ds)]
    ds.notes = "; ".join(notes)
    return ds
