"""reidkit.datasets: synthetic replicas of every layout (empty files) plus real Market-1501."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from reidkit.datasets import (
    DATASET_NAMES,
    DatasetError,
    ReIDDataset,
    dataset_options,
    dataset_table,
    drop_junk,
    get_dataset,
    validate,
)


def touch(folder: Path, names: Iterable[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


def pcs(samples) -> list[tuple[int, int]]:
    """(pid, camid) pairs in order."""
    return [(s.pid, s.camid) for s in samples]


# --------------------------------------------------------------------------- Market-1501

MARKET_TRAIN = [
    "0002_c1s1_000451_03.jpg",
    "0002_c2s1_000301_01.jpg",
    "0007_c6s3_094992_04.jpg.jpg",
    "0007_c3s1_000551_00.jpg",
    "Thumbs.db",
]
MARKET_QUERY = ["0001_c1s1_001051_00.jpg", "0003_c4s6_022316_01.jpg"]
MARKET_GALLERY = [
    "-1_c1s1_000401_03.jpg",
    "-1_c4s6_022316_11.jpg.jpg",
    "0000_c1s1_000000_01.jpg",
    "0001_c2s1_000301_00.jpg",
    "0001_c1s1_001051_02.jpg",
    "0003_c5s2_000001_01.jpg",
]


def make_market(parent: Path, folder: str = "market1501") -> Path:
    ds = parent / folder
    touch(ds / "bounding_box_train", MARKET_TRAIN)
    touch(ds / "query", MARKET_QUERY)
    touch(ds / "bounding_box_test", MARKET_GALLERY)
    (ds / "readme.txt").write_text("x")
    return ds


def test_market_counts_camids_and_junk(tmp_path: Path) -> None:
    make_market(tmp_path)
    ds = get_dataset("market1501", tmp_path)
    assert ds.name == "market1501"
    assert ds.root == (tmp_path / "market1501").absolute()
    # train: sorted by name, Thumbs.db skipped, .jpg.jpg parsed, relabelled 2->0, 7->1
    assert pcs(ds.train) == [(0, 0), (0, 1), (1, 2), (1, 5)]
    assert [s.extra["orig_pid"] for s in ds.train] == [2, 2, 7, 7]
    assert ds.train[3].path.endswith("0007_c6s3_094992_04.jpg.jpg")
    assert pcs(ds.query) == [(1, 0), (3, 3)]
    assert pcs(ds.gallery) == [(-1, 0), (-1, 3), (0, 0), (1, 0), (1, 1), (3, 4)]
    assert len(drop_junk(ds.gallery)) == 4
    assert {s.pid for s in drop_junk(ds.gallery)} == {0, 1, 3}
    st = ds.stats()
    assert (st["train"].images, st["train"].ids, st["train"].cameras) == (4, 2, 4)
    assert dataset_table(ds)[2] == ("gallery", 6, 4, 4)
    assert "2 junk" in ds.notes and "1 distractors" in ds.notes and "relabelled" in ds.notes


def test_market_options_and_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_market(tmp_path, "Market-1501-v15.09.15")
    direct = get_dataset("market", folder, relabel_train=False, keep_junk=False)
    assert [s.pid for s in direct.train] == [2, 2, 7, 7]
    assert all(s.pid != -1 for s in direct.gallery) and len(direct.gallery) == 4
    monkeypatch.setenv("REIDKIT_DATA", str(tmp_path))
    assert get_dataset("Market-1501").root == folder.absolute()


def test_market_bad_name_and_wrong_root(tmp_path: Path) -> None:
    ds = make_market(tmp_path)
    with pytest.raises(DatasetError) as err:
        get_dataset("market1501", tmp_path / "nowhere")
    msg = str(err.value)
    assert "REIDKIT_DATA" in msg and "bounding_box_train/" in msg and msg.count(". ") == 0
    shutil.rmtree(ds / "query")
    with pytest.raises(DatasetError, match=r"market1501/query"):
        get_dataset("market1501", tmp_path)
    touch(ds / "query", ["image_0001.jpg"])
    with pytest.raises(DatasetError, match=r"image_0001\.jpg.*0002_c1s1_000451_03\.jpg"):
        get_dataset("market1501", tmp_path)


# --------------------------------------------------------------------------- Duke family


def make_duke_like(ds: Path, train_cams: int = 8) -> Path:
    touch(ds / "bounding_box_train", [f"0005_c{c}_f00{c}6182.jpg" for c in range(1, train_cams + 1)])
    touch(ds / "query", ["0001_c2_f0046182.jpg"])
    touch(ds / "bounding_box_test", ["0001_c5_f0112345.jpg", "0009_c8_f0000001.jpg"])
    return ds


def test_dukemtmc(tmp_path: Path) -> None:
    make_duke_like(tmp_path / "dukemtmc-reid" / "DukeMTMC-reID")
    ds = get_dataset("dukemtmc", tmp_path)
    assert [s.camid for s in ds.train] == list(range(8))
    assert {s.pid for s in ds.train} == {0}
    assert pcs(ds.query) == [(1, 1)] and pcs(ds.gallery) == [(1, 4), (9, 7)]
    assert validate(ds) == []
    # the release folder on its own also works
    assert get_dataset("duke", tmp_path / "dukemtmc-reid" / "DukeMTMC-reID").stats() == ds.stats()


def test_occluded_duke(tmp_path: Path) -> None:
    make_duke_like(tmp_path / "Occluded_Duke", train_cams=3)
    ds = get_dataset("occluded_duke", tmp_path)
    assert ds.name == "occluded_duke" and len(ds.train) == 3 and pcs(ds.gallery)[1] == (9, 7)
    with pytest.raises(DatasetError, match="Occluded_Duke"):
        get_dataset("occluded_duke", tmp_path / "empty")


# --------------------------------------------------------------------------- CUHK03-NP


def make_cuhk03(parent: Path) -> Path:
    for variant, n in (("labeled", 3), ("detected", 2)):
        ds = parent / "cuhk03-np" / variant
        touch(ds / "bounding_box_train", [f"0001_c{1 + i % 2}_{i + 1}.png" for i in range(n)])
        touch(ds / "query", ["0769_c1_1.png", "0770_c2_1.png"])
        touch(ds / "bounding_box_test", ["0769_c2_2.png", "0770_c1_2.png", "0770_c1_3.png"])
    return parent / "cuhk03-np"


def test_cuhk03_variants(tmp_path: Path) -> None:
    np_dir = make_cuhk03(tmp_path)
    labeled = get_dataset("cuhk03", tmp_path)
    detected = get_dataset("cuhk03", np_dir, variant="detected")
    assert labeled.root.name == "labeled" and detected.root.name == "detected"
    assert len(labeled.train) == 3 and len(detected.train) == 2
    assert pcs(labeled.train) == [(0, 0), (0, 0), (0, 1)]  # sorted: c1_1, c1_3, c2_2
    assert pcs(labeled.query) == [(769, 0), (770, 1)]
    assert {s.camid for s in labeled.gallery} == {0, 1}
    assert "labeled" in labeled.notes and "detected" in detected.notes
    with pytest.raises(DatasetError, match="variant"):
        get_dataset("cuhk03", tmp_path, variant="both")
    with pytest.raises(DatasetError, match="detected variant"):
        get_dataset("cuhk03", np_dir / "detected", variant="labeled")


# --------------------------------------------------------------------------- MSMT17


def make_msmt17(parent: Path, version: int = 1) -> Path:
    release = parent / f"MSMT17_V{version}"
    train_dir, test_dir = ("train", "test") if version == 1 else ("mask_train_v2", "mask_test_v2")
    lists = {
        "list_train.txt": ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0001/0001_001_15_0303noon_0020_1.jpg 1"],
        "list_val.txt": ["0000/0000_002_07_0303afternoon_0100_0.jpg 0"],
        "list_query.txt": ["0000/0000_000_03_0113morning_0001_0.jpg 0"],
        "list_gallery.txt": ["0000/0000_001_10_0113noon_0009_0.jpg 0", "0002/0002_000_03_0113noon_0012_1.jpg 2", ""],
    }
    for name, lines in lists.items():
        (release).mkdir(parents=True, exist_ok=True)
        (release / name).write_text("\n".join(lines) + "\n")
        folder = release / (train_dir if name in ("list_train.txt", "list_val.txt") else test_dir)
        touch(folder, [line.split()[0] for line in lines if line])
    return release


@pytest.mark.parametrize("version", [1, 2])
def test_msmt17_versions_and_val(tmp_path: Path, version: int) -> None:
    release = make_msmt17(tmp_path, version)
    ds = get_dataset("msmt17", tmp_path, version=version)
    assert ds.root == release.absolute()
    assert pcs(ds.train) == [(0, 0), (1, 14), (0, 6)]
    assert all(Path(s.path).is_file() for s in (*ds.train, *ds.query, *ds.gallery))
    assert pcs(ds.query) == [(0, 2)] and pcs(ds.gallery) == [(0, 9), (2, 2)]
    assert f"V{version}" in ds.notes and "includes list_val" in ds.notes
    no_val = get_dataset("msmt17", release, version=version, combine_val=False)
    assert len(no_val.train) == 2 and "excludes list_val" in no_val.notes


def test_msmt17_errors(tmp_path: Path) -> None:
    release = make_msmt17(tmp_path, 2)
    with pytest.raises(DatasetError, match="pass version=2"):
        get_dataset("msmt17", release, version=1)
    with pytest.raises(DatasetError, match="MSMT17_V1"):
        get_dataset("msmt17", tmp_path, version=1)
    with pytest.raises(DatasetError, match="version must be"):
        get_dataset("msmt17", tmp_path, version=3)
    (release / "list_query.txt").write_text("0000/0000_000_01_x.jpg\n")
    with pytest.raises(DatasetError, match=r"list_query\.txt:1"):
        get_dataset("msmt17", tmp_path, version=2)


# --------------------------------------------------------------------------- folder (custom)


def test_folder_market_names_and_identity_folders(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    touch(root / "train", ["0010_c1_a.jpg", "0010_c2_b.jpg", "-1_c1_junk.jpg", "notes.txt"])
    touch(root / "train", ["0042/c1_0001.png", "0042/c3_0002.png"])
    touch(root / "query", ["7/c1_q.jpg", "0008_c2_q.jpg", "-1_c2_q.jpg"])
    touch(root / "gallery", ["7/c2_g.jpg", "0008_c1_g.jpg", "-1_c1_g.jpg"])
    ds = get_dataset("folder", root)
    assert pcs(ds.train) == [(0, 0), (0, 1), (1, 0), (1, 2)]
    assert [s.extra["orig_pid"] for s in ds.train] == [10, 10, 42, 42]
    assert sorted(pcs(ds.query)) == [(7, 0), (8, 1)]  # junk query dropped
    assert sorted(pcs(ds.gallery)) == [(-1, 0), (7, 1), (8, 0)]  # gallery junk kept
    assert "2 junk" in ds.notes and "warning" not in ds.notes
    assert validate(ds) == []


def test_folder_csv(tmp_path: Path) -> None:
    touch(tmp_path / "imgs", ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    rows = [
        "path,pid,camid,split",
        "imgs/a.jpg,5,0,train",
        "imgs/b.jpg,9,1,train",
        "imgs/c.jpg,1,0,query",
        "imgs/d.jpg,1,1,gallery",
        "imgs/e.jpg,2,0,query",
    ]
    csv_file = tmp_path / "samples.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    for root in (tmp_path, csv_file):
        ds = get_dataset("folder", root)
        assert pcs(ds.train) == [(0, 0), (1, 1)]
        assert pcs(ds.query) == [(1, 0), (2, 0)] and pcs(ds.gallery) == [(1, 1)]
        assert ds.query[0].path == str((tmp_path / "imgs" / "c.jpg").absolute())
    # query pid 2 has no gallery image: a warning, not an error
    assert "1 query images (1 ids: 2)" in ds.notes

    csv_file.write_text("\n".join([*rows, "imgs/zzz.jpg,1,0,gallery"]) + "\n")
    with pytest.raises(DatasetError, match=r"zzz\.jpg"):
        get_dataset("folder", csv_file)
    csv_file.write_text("path,pid,split\nimgs/a.jpg,5,train\n")
    with pytest.raises(DatasetError, match="missing camid"):
        get_dataset("folder", csv_file)
    csv_file.write_text("path,pid,camid,split\nimgs/a.jpg,5,x,train\n")
    with pytest.raises(DatasetError, match=r"samples\.csv:2"):
        get_dataset("folder", csv_file)


def test_folder_fatal_problems(tmp_path: Path) -> None:
    touch(tmp_path / "query", ["0001_c1_q.jpg"])
    touch(tmp_path / "gallery", ["0001_c1_g.jpg"])
    with pytest.raises(DatasetError, match="at least 2 cameras"):
        get_dataset("folder", tmp_path)
    touch(tmp_path / "gallery", ["alice/c1_0.jpg"])
    with pytest.raises(DatasetError, match="integer pid"):
        get_dataset("folder", tmp_path)
    with pytest.raises(DatasetError, match="REIDKIT_DATA"):
        get_dataset("folder", tmp_path / "missing")


def test_validate_generic() -> None:
    from reidkit.datasets import Sample

    ds = ReIDDataset("x", Path("/x"), [Sample("a", 3, 0)], [Sample("q", -1, -1)], [])
    with pytest.raises(DatasetError) as err:
        validate(ds)
    msg = str(err.value)
    for part in ("gallery is empty", "no camera id", "junk", "not relabelled"):
        assert part in msg


# --------------------------------------------------------------------------- registry


def test_registry(tmp_path: Path) -> None:
    assert set(DATASET_NAMES) == {"market1501", "dukemtmc", "occluded_duke", "cuhk03", "msmt17", "folder"}
    assert dataset_options("cuhk03") == {"variant": "labeled"}
    assert dataset_options("msmt17") == {"version": 1, "combine_val": True}
    with pytest.raises(DatasetError, match="choose one of"):
        get_dataset("viper", tmp_path)
    with pytest.raises(DatasetError, match=r"unknown option.*variant"):
        get_dataset("market1501", tmp_path, variant="labeled")


# --------------------------------------------------------------------------- real Market-1501


@pytest.mark.data
def test_real_market1501(data_root: Path) -> None:
    start = time.perf_counter()
    ds = get_dataset("market1501", data_root)
    elapsed = time.perf_counter() - start
    assert dataset_table(ds) == [
        ("train", 12936, 751, 6),
        ("query", 3368, 750, 6),
        ("gallery", 19732, 752, 6),  # 750 ids + distractors (0) + junk (-1)
    ]
    gallery = drop_junk(ds.gallery)
    assert len(gallery) == 15913
    assert sum(s.pid == 0 for s in gallery) == 2798
    assert sum(s.path.endswith(".jpg.jpg") for s in (*ds.train, *ds.query, *ds.gallery)) > 0
    assert {s.camid for s in ds.gallery} == set(range(6))
    assert {s.pid for s in ds.train} == set(range(751))
    assert {s.pid for s in ds.query} <= {s.pid for s in gallery}
    assert validate(ds) == []  # every query has a cross-camera match
    assert elapsed < 10, f"parsing file names took {elapsed:.1f}s"


def test_holdout_split_and_query_gallery() -> None:
    from reidkit.datasets.base import DatasetError, Sample, holdout_query_gallery, holdout_split

    train = [Sample(f"{p}_{c}_{i}.jpg", p, c) for p in (3, 1, 7, 5) for c in (0, 1) for i in range(2)]
    kept, held = holdout_split(train, 2)
    assert {s.pid for s in held} == {5, 7} and {s.pid for s in kept} == {1, 3}  # the largest pids
    assert len(kept) + len(held) == len(train)
    assert holdout_split(train, 0) == (train, [])
    query, gallery = holdout_query_gallery(held)
    # per (pid, camera) the first image by path is the query
    assert [s.path for s in query] == ["5_0_0.jpg", "5_1_0.jpg", "7_0_0.jpg", "7_1_0.jpg"]
    assert sorted(s.path for s in gallery) == ["5_0_1.jpg", "5_1_1.jpg", "7_0_1.jpg", "7_1_1.jpg"]
    # the trained ids' images as distractors: the same queries, the gallery followed by every kept image
    query_d, gallery_d = holdout_query_gallery(held, kept)
    assert query_d == query and gallery_d == [*gallery, *kept] and len(gallery_d) == 4 + 8
    with pytest.raises(DatasetError, match="cannot hold out 4 of 4"):
        holdout_split(train, 4)
