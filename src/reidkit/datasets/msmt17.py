"""MSMT17 (Wei et al., CVPR 2018), V1 and V2 (V2: faces blurred, different folder names).

``MSMT17_V1/`` holds ``train/``, ``test/`` and ``list_{train,val,query,gallery}.txt``;
``MSMT17_V2/`` the same lists with ``mask_train_v2/`` and ``mask_test_v2/``. A list line is
``<relative/path.jpg> <pid>`` (train/val paths under the train folder, query/gallery under the test
folder); the camera is the 3rd ``_`` field of the file name (``0000_000_01_0303morning_0015_0.jpg``
is camera 1 of 15). ``list_val.txt`` holds more images of the training ids: with
``combine_val=True`` (default, the usual 32,621 images / 1,041 ids) train includes them.
Query 11,659 / gallery 82,161 images of 3,060 ids.
"""

from __future__ import annotations

import os
from pathlib import Path

from reidkit.datasets._common import locate, missing_error
from reidkit.datasets.base import DatasetError, ReIDDataset, Sample

NAME = "msmt17"
# version -> (release folder, train folder names, test folder names)
VERSIONS: dict[int, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    1: ("MSMT17_V1", ("train",), ("test",)),
    2: ("MSMT17_V2", ("mask_train_v2", "mask_train_V2"), ("mask_test_v2", "mask_test_V2")),
}
LISTS = ("list_train.txt", "list_query.txt", "list_gallery.txt")


def parse_list(list_file: Path, image_dir: Path) -> list[Sample]:
    """Samples of one MSMT17 list file; paths are joined to ``image_dir``."""
    samples = []
    base = str(image_dir)
    with open(list_file, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                rel, pid_text = fields
                pid, cam = int(pid_text), int(os.path.basename(rel).split("_")[2])
            except (ValueError, IndexError):
                raise DatasetError(
                    f"{list_file}:{lineno}: expected '<dir>/<pid>_<idx>_<cam>_....jpg <pid>' "
                    f"(e.g. '0000/0000_000_01_0303morning_0015_0.jpg 0'), got {line.strip()!r}."
                ) from None
            if cam < 1:
                raise DatasetError(f"{list_file}:{lineno}: camera {cam} in {rel} is not 1-15.")
            samples.append(Sample(os.path.join(base, rel), pid, cam - 1))
    return samples


def _child(folder: Path, names: tuple[str, ...], version: int, layout: str) -> Path:
    for name in names:
        if (folder / name).is_dir():
            return folder / name
    other = 3 - version
    if any((folder / n).is_dir() for n in (*VERSIONS[other][1], *VERSIONS[other][2])):
        raise DatasetError(f"msmt17: {folder} is an MSMT17 V{other} release; pass version={other}.")
    raise missing_error(folder / names[0], "MSMT17", layout)


def load(
    root: str | os.PathLike[str] | None = None, version: int = 1, combine_val: bool = True
) -> ReIDDataset:
    """Load MSMT17 ``version`` 1 or 2 from ``root`` (the folder holding ``MSMT17_V<n>/``, or it)."""
    if str(version) in ("1", "2"):
        version = int(version)
    if version not in VERSIONS:
        raise DatasetError(f"msmt17: version must be 1 or 2, not {version!r}.")
    release, train_names, test_names = VERSIONS[version]
    layout = f"{release}/ with {train_names[0]}/, {test_names[0]}/ and list_*.txt files"
    lists = (*LISTS, "list_val.txt") if combine_val else LISTS
    folder = locate(root, (release, f"msmt17/{release}", "msmt17"), lists, "MSMT17", layout)
    train_dir = _child(folder, train_names, version, layout)
    test_dir = _child(folder, test_names, version, layout)
    train = parse_list(folder / "list_train.txt", train_dir)
    if combine_val:
        train += parse_list(folder / "list_val.txt", train_dir)
    query = parse_list(folder / "list_query.txt", test_dir)
    gallery = parse_list(folder / "list_gallery.txt", test_dir)
    val = "train includes list_val.txt" if combine_val else "train excludes list_val.txt"
    return ReIDDataset(NAME, folder, train, query, gallery, f"MSMT17 V{version}; {val}")
