"""The occluded benchmark: deterministic, real occluders over 20-50 % of each query, gallery unchanged."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidkit.datasets import get_dataset
from reidkit.datasets.base import ReIDDataset, Sample
from reidkit.datasets.occlude import KINDS, SYNTHETIC_KINDS, _rng, make_occluded, occlude, occlude_synthetic


def _tiny(data_root: Path, n_query: int = 24) -> ReIDDataset:
    m = data_root / "market1501"

    def samples(folder: str, n: int) -> list[Sample]:
        out = []
        for p in sorted((m / folder).glob("*.jpg"))[:n]:
            pid, cam = p.name.split("_")[:2]
            out.append(Sample(str(p), int(pid), int(cam[1]) - 1))
        return out

    query = samples("query", n_query)
    pids = {s.pid for s in query}
    gallery = [s for s in samples("bounding_box_test", 400) if s.pid in pids or s.pid <= 0][:80]
    return ReIDDataset("market1501", m, samples("bounding_box_train", 30), query, gallery)


def test_occluders_cover_the_asked_share_with_other_peoples_pixels(data_root: Path) -> None:
    ds = _tiny(data_root)
    donors = sorted(s.path for s in ds.train)
    seen = set()
    for s in ds.query:
        img = cv2.imread(s.path)
        out, what = occlude(img, donors, _rng(0, Path(s.path).name), 0.2, 0.5)
        assert out.shape == img.shape and what["kind"] in KINDS and what["donor"] in {Path(d).name for d in donors}
        assert 0.18 <= what["fraction"] <= 0.52, what
        changed = (np.abs(out.astype(int) - img.astype(int)).max(2) > 0).mean()
        assert changed >= 0.5 * what["fraction"], (what, changed)  # the pixels really changed there
        seen.add(what["kind"])
    assert len(seen) >= 3


def test_synthetic_occluders_are_one_rectangle_of_the_asked_share(data_root: Path, tmp_path: Path) -> None:
    ds = _tiny(data_root)
    seen = set()
    for s in ds.query:
        img = cv2.imread(s.path)
        out, what = occlude_synthetic(img, _rng(0, Path(s.path).name), 0.2, 0.5)
        assert out.shape == img.shape and what["kind"] in SYNTHETIC_KINDS and what["donor"] == ""
        assert 0.18 <= what["fraction"] <= 0.52, what
        ys, xs = np.nonzero(np.abs(out.astype(int) - img.astype(int)).max(2) > 0)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) / (img.shape[0] * img.shape[1])
        assert box <= what["fraction"] + 1e-4, (what, box)  # every changed pixel lies inside the rectangle
        if what["kind"] == "solid":
            assert len(np.unique(out[ys, xs], axis=0)) == 1
        seen.add(what["kind"])
    assert seen == set(SYNTHETIC_KINDS)
    a = make_occluded(ds, tmp_path / "a", seed=7, style="synthetic", sheet=8)
    no_train = ReIDDataset(ds.name, ds.root, [], ds.query, ds.gallery)
    b = make_occluded(no_train, tmp_path / "b", seed=7, style="synthetic")
    assert set(a.kinds) <= set(SYNTHETIC_KINDS) and a.queries == b.queries == len(ds.query)  # no train split needed
    name = Path(ds.query[0].path).name
    assert (tmp_path / "a" / "query" / name).read_bytes() == (tmp_path / "b" / "query" / name).read_bytes()
    with pytest.raises(ValueError, match="style"):
        make_occluded(ds, tmp_path / "c", style="paint")


def test_make_occluded_is_deterministic_and_reads_as_a_dataset(data_root: Path, tmp_path: Path) -> None:
    ds = _tiny(data_root)
    a = make_occluded(ds, tmp_path / "a", seed=3, sheet=8)
    make_occluded(ds, tmp_path / "b", seed=3, sheet=8)
    make_occluded(ds, tmp_path / "c", seed=4, sheet=8)
    assert a.queries == len(ds.query) and a.gallery == len(ds.gallery) and sum(a.kinds.values()) == a.queries
    assert 0.2 <= a.mean_fraction <= 0.5 and a.sheet is not None and a.sheet.is_file()
    for s in ds.query:
        name = Path(s.path).name
        assert (tmp_path / "a" / "query" / name).read_bytes() == (tmp_path / "b" / "query" / name).read_bytes()
    differ = sum(
        (tmp_path / "a" / "query" / Path(s.path).name).read_bytes()
        != (tmp_path / "c" / "query" / Path(s.path).name).read_bytes()
        for s in ds.query
    )
    assert differ == len(ds.query)  # another seed, other occluders
    # each image depends on the seed and its own name only, not on the other images
    alone = make_occluded(ReIDDataset(ds.name, ds.root, ds.train, ds.query[5:6], ds.gallery), tmp_path / "d", seed=3)
    name = Path(ds.query[5].path).name
    assert (tmp_path / "d" / "query" / name).read_bytes() == (tmp_path / "a" / "query" / name).read_bytes()
    assert alone.queries == 1

    occ = get_dataset("folder", tmp_path / "a")
    assert [Path(s.path).name for s in occ.query] == [Path(s.path).name for s in ds.query]
    assert [(s.pid, s.camid) for s in occ.query] == [(s.pid, s.camid) for s in ds.query]
    assert [s.path for s in occ.gallery] == [s.path for s in ds.gallery]  # Market's own gallery, by reference
    with (tmp_path / "a" / "occlusion.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(ds.query) and {r["kind"] for r in rows} <= set(KINDS)


def test_make_occluded_bad_input(data_root: Path, tmp_path: Path) -> None:
    from reidkit.datasets.base import DatasetError

    ds = _tiny(data_root, 2)
    with pytest.raises(ValueError, match="fraction"):
        make_occluded(ds, tmp_path / "x", fraction=(0.6, 0.3))
    with pytest.raises(DatasetError, match="no train split"):
        make_occluded(ReIDDataset(ds.name, ds.root, [], ds.query, ds.gallery), tmp_path / "x")


def test_cli_make_occluded(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    import reidkit.cli.common
    from reidkit.cli import app

    monkeypatch.setattr(reidkit.cli.common, "console", Console(width=250))
    tiny = _tiny(data_root, 6)
    root = tmp_path / "mini"
    for split, samples in (("train", tiny.train), ("query", tiny.query), ("gallery", tiny.gallery)):
        (root / split).mkdir(parents=True)
        for s in samples:
            (root / split / Path(s.path).name).write_bytes(Path(s.path).read_bytes())
    base = ["datasets", "make-occluded", "folder", "--root", str(root), "--out"]
    res = CliRunner().invoke(app, [*base, str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "6 occluded queries" in res.output and "reidkit eval --dataset folder --root" in res.output
    bad = CliRunner().invoke(app, [*base, str(tmp_path / "p"), "--min-fraction", "0.7"])
    assert bad.exit_code == 2 and "fraction" in bad.output
