"""Person search over a gallery: appearances, filters, track queries, re-ranking, threshold
calibration, the HTML/JSON/terminal reports and the ``search`` / ``calibrate`` commands."""

from __future__ import annotations

import dataclasses
import json
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import cv2
import faiss
import numpy as np
import pytest

from reidkit.search.query import calibrate as cal
from reidkit.search.query.report import (
    REVIEW_TITLE,
    format_time,
    load_json,
    print_result,
    render_html,
    result_table,
    save_json,
    write_html,
)
from reidkit.search.query.search import SearchResult, search_person
from reidkit.search.storage import Gallery, Sighting

DIM = 32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(old)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class FakeEmbedder:
    """Looks pictures up in a table of features (no model)."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.calls = 0

    def embed(self, images, bgr: bool = False, progress: bool = False) -> np.ndarray:
        self.calls += 1
        return np.stack([self.table["array" if isinstance(im, np.ndarray) else str(im)] for im in images])


# -- a small multi-camera world -----------------------------------------------------------------------
# The target t is seen on cam1 (track 1, t=10..13; its last crop is occluded and does not match),
# on cam2 alone (untracked, t=50) and in cam2 track 5 (t=100..103). Everyone else is orthogonal to t.
@pytest.fixture()
def world(tmp_path: Path):
    rng = np.random.default_rng(0)
    t = unit(rng.standard_normal(DIM))

    def near(n: int, noise: float = 0.15) -> np.ndarray:
        return unit(t + noise * unit(rng.standard_normal((n, DIM))))

    def other(n: int) -> np.ndarray:
        x = rng.standard_normal((n, DIM))
        x -= (x @ t)[:, None] * t[None, :]
        return unit(x)

    rows: list[tuple[np.ndarray, Sighting]] = []

    def add(feat: np.ndarray, src: str, cam: str, ts: float, track: int | None, frame: int | None = None) -> None:
        box = (4, 4, 28, 44)
        rows.append((feat, Sighting(src, ts, cam, frame=frame, box=box, track_id=track, quality=float(ts % 7) / 7)))

    for i, f in enumerate(near(3)):
        add(f, "cam1.mp4", "cam1", 10.0 + i, 1, frame=i)
    add(other(1)[0], "cam1.mp4", "cam1", 13.0, 1, frame=3)  # occluded crop of the target's track
    for i, f in enumerate(other(3)):
        add(f, "cam1.mp4", "cam1", 20.0 + i, 2, frame=10 + i)
    add(near(1)[0], "cam2.mp4", "cam2", 50.0, None, frame=50)
    for i, f in enumerate(near(4)):
        add(f, "cam2.mp4", "cam2", 100.0 + i, 5, frame=100 + i)
    for i, f in enumerate(other(6)):
        add(f, "cam3.mp4", "cam3", 5.0 + i, 7 + i // 3, frame=i)
    g = Gallery.open(tmp_path / "g", dim=DIM)
    g.add(np.stack([f for f, _ in rows]), [s for _, s in rows])
    yield SimpleNamespace(g=g, t=t, tmp=tmp_path, emb=FakeEmbedder({"target.jpg": t, "other.jpg": other(1)[0]}))
    g.close()


def track_row(g: Gallery, source: str, tracker_id: int) -> int:
    return next(t.id for t in g.tracks() if t.source == source and t.track_id == tracker_id)


def test_appearances_grouped_by_camera_in_time_order_with_tracks_merged(world):
    r = search_person(world.g, world.emb, ["target.jpg"], threshold=0.5)
    assert world.emb.calls == 1
    assert r.query.kind == "images" and r.query.labels == ("target.jpg",)
    assert len(r.hits) == 8  # 3 + 1 + 4 target detections; the occluded crop falls below the threshold
    groups = r.by_camera()
    assert list(groups) == ["cam1", "cam2"]  # cameras in order of first appearance
    (a1,) = groups["cam1"]
    assert a1.track_id == 1 and len(a1.hit_ids) == 3 and a1.n_crops == 4
    assert (a1.start, a1.end) == (10.0, 13.0)  # the track's whole span, occluded crop included
    assert a1.best.id == a1.hit_ids[0] and a1.score == max(h.score for h in r.hits if h.camera == "cam1")
    assert a1.track == track_row(world.g, "cam1.mp4", 1)
    single, track5 = groups["cam2"]
    assert single.track_id is None and single.start == single.end == 50.0 and single.n_crops == 1
    assert track5.track_id == 5 and (track5.start, track5.end) == (100.0, 103.0) and len(track5.hit_ids) == 4
    assert all(h.score >= 0.5 for h in r.hits)
    assert [a.start for a in r.appearances] == [10.0, 50.0, 100.0]


def test_filters_cameras_and_time(world):
    r = search_person(world.g, world.emb, ["target.jpg"], threshold=0.5, cameras=["cam2"])
    assert {a.camera for a in r.appearances} == {"cam2"} and r.cameras == ["cam2"]
    r = search_person(world.g, world.emb, ["target.jpg"], threshold=0.5, time_range=(0, 60))
    assert [a.start for a in r.appearances] == [10.0, 50.0] and r.time_range == (0.0, 60.0)
    r = search_person(world.g, world.emb, ["target.jpg"], threshold=0.5, cameras="cam3")
    assert r.appearances == [] and r.hits == []


def test_query_by_track_excludes_its_own_track(world):
    tid = track_row(world.g, "cam1.mp4", 1)
    r = search_person(world.g, track_id=tid, threshold=0.5, rerank=False)
    assert r.query.kind == "track" and r.query.track is not None and r.query.track.id == tid
    assert not any(h.source == "cam1.mp4" and h.track_id == 1 for h in r.hits)
    assert [a.camera for a in r.appearances] == ["cam2", "cam2"]
    assert len(r.hits) == 5
    with pytest.raises(ValueError, match="no track"):
        search_person(world.g, track_id=10_000)
    with pytest.raises(ValueError, match="exactly one"):
        search_person(world.g, world.emb, ["target.jpg"], track_id=tid)


def test_near_misses_are_the_closest_failed_candidates_merged_per_track(world):
    everyone = search_person(world.g, world.emb, ["target.jpg"], threshold=-1.0)  # all 18, in final rank order
    r = search_person(world.g, world.emb, ["target.jpg"], threshold=0.5, review_floor=-1.0)  # no floor
    assert [h.id for h in everyone.hits if h.id in {m.id for m in r.hits}] == [h.id for h in r.hits]
    matched = {h.id for h in r.hits}
    occluded = next(h.id for h in everyone.hits if h.camera == "cam1" and h.track_id == 1 and h.id not in matched)
    # Failed: cam1 track 2 and cam3 tracks 7 and 8 (3 detections each), and the occluded crop of the target's
    # matched cam1 track 1, which is left out (that track is an appearance already).
    tracks_in_rank_order: list[tuple[str, int]] = []
    for h in everyone.hits:
        key = (h.camera, h.track_id)
        if h.id not in matched and h.id != occluded and key not in tracks_in_rank_order:
            tracks_in_rank_order.append(key)
    assert sorted(tracks_in_rank_order) == [("cam1", 2), ("cam3", 7), ("cam3", 8)]
    near = r.near_misses
    assert sorted((a.camera, a.track_id) for a in near) == sorted(tracks_in_rank_order)
    assert [a.score for a in near] == sorted((a.score for a in near), reverse=True)  # listed by similarity (issue 22)
    ids = [i for a in near for i in a.hit_ids]
    assert len(ids) == 9 and not set(ids) & matched and occluded not in ids
    assert all(len(a.hit_ids) == 3 == a.n_crops and a.best.id in a.hit_ids for a in near)
    t2 = next(a for a in near if a.track_id == 2)
    assert (t2.start, t2.end) == (20.0, 22.0) and t2.track == track_row(world.g, "cam1.mp4", 2)
    assert all(a.score < 0.5 and a.z is None for a in near)  # no z test on a 20-detection gallery
    # review caps the appearances, not the detections: the closest track keeps all its failed detections
    (one,) = search_person(world.g, world.emb, ["target.jpg"], threshold=0.5, review=1, review_floor=-1).near_misses
    assert one == next(a for a in near if (a.camera, a.track_id) == tracks_in_rank_order[0])  # the best-ranked
    assert search_person(world.g, world.emb, ["target.jpg"], threshold=0.5, review=0).near_misses == []
    assert [h.id for h in search_person(world.g, world.emb, ["target.jpg"], threshold=0.5, review=0).hits] == [
        h.id for h in r.hits
    ]
    with pytest.raises(ValueError, match="review"):
        search_person(world.g, world.emb, ["target.jpg"], review=-1)
    # nothing matches: the closest candidates, the target's own tracks first
    none = search_person(world.g, world.emb, ["target.jpg"], threshold=0.999, rerank=False, review=3)
    assert none.hits == [] and len(none.near_misses) == 3
    assert {(a.camera, a.track_id) for a in none.near_misses} == {("cam1", 1), ("cam2", 5), ("cam2", None)}
    assert [a.score for a in none.near_misses] == sorted((a.score for a in none.near_misses), reverse=True)
    assert none.review_floor == pytest.approx(0.999 - 0.2)


def test_review_list_has_a_floor(world):
    # the default floor: REVIEW_MARGIN below the threshold; the others are orthogonal to the target (similarity ~0)
    r = search_person(world.g, world.emb, ["target.jpg"], threshold=0.5)
    assert r.review_floor == pytest.approx(0.3) and r.near_misses == []
    low = search_person(world.g, world.emb, ["target.jpg"], threshold=0.5, review_floor=-0.05)
    assert low.near_misses and all(a.score >= -0.05 for a in low.near_misses)
    assert len(low.near_misses) < len(search_person(world.g, world.emb, ["target.jpg"], threshold=0.5,
                                                    review_floor=-1).near_misses) or all(
        a.score >= -0.05 for a in low.near_misses)  # fmt: skip
    assert SearchResult.from_dict(json.loads(json.dumps(low.to_dict()))).review_floor == -0.05


def test_threshold_applied_and_defaults(world):
    loose = search_person(world.g, world.emb, ["target.jpg"], threshold=-1.0, rerank=False)
    assert len(loose.hits) == len(world.g) == loose.n_candidates
    strict = search_person(world.g, world.emb, ["target.jpg"], threshold=0.999, rerank=False)
    assert len(strict.hits) == 0 and strict.appearances == []
    mid = float(np.median([h.score for h in loose.hits if h.score > 0.5]))
    part = search_person(world.g, world.emb, ["target.jpg"], threshold=mid, rerank=False)
    assert 0 < len(part.hits) < 8 and min(h.score for h in part.hits) >= mid
    assert part.threshold_source == "given"
    default = search_person(world.g, world.emb, ["target.jpg"])
    assert default.threshold == cal.DEFAULT_THRESHOLD and default.threshold_source.startswith("default")
    info = SimpleNamespace(name="m", source="", meta={"calibration": {"threshold": 0.9}})
    assert search_person(world.g, world.emb, ["target.jpg"], model_info=info).threshold == 0.9


def test_several_pictures_mean_and_max(world):
    emb = FakeEmbedder({"a.jpg": unit(world.t + 0.1 * np.eye(DIM)[0]), "b.jpg": unit(world.t - 0.1 * np.eye(DIM)[0])})
    mean = search_person(world.g, emb, ["a.jpg", "b.jpg"], threshold=0.5, rerank=False)
    single = search_person(world.g, world.emb, ["target.jpg"], threshold=0.5, rerank=False)
    assert [h.id for h in mean.hits] == [h.id for h in single.hits]  # mean of a and b is t
    for one in ("target.jpg", np.zeros((8, 4, 3), np.uint8)):  # a single picture needs no list
        r = search_person(world.g, FakeEmbedder({"target.jpg": world.t, "array": world.t}), one, threshold=0.5)
        assert len(r.query.labels) == 1 and len(r.hits) == 8
    mx = search_person(world.g, emb, ["a.jpg", "b.jpg"], threshold=0.5, rerank=False, fuse="max")
    assert {h.id for h in mx.hits} == {h.id for h in single.hits} and mx.fuse == "max"
    assert mx.n_candidates <= mx.k


def test_rerank_over_candidates_demotes_a_hard_distractor(tmp_path: Path):
    # A query near a tight target cluster; one distractor, a member of another cluster, is more similar
    # to the query than every target but not k-reciprocally close to it.
    rng = np.random.default_rng(1)
    c_t = unit(rng.standard_normal(DIM))
    q = unit(c_t + 0.7 * unit(rng.standard_normal(DIM)))
    targets = unit(c_t + 0.25 * unit(rng.standard_normal((8, DIM))))
    centres = unit(unit(rng.standard_normal((10, DIM))) + 0.6 * q)
    others = unit(np.repeat(centres, 8, 0) + 0.3 * unit(rng.standard_normal((80, DIM))))
    hard = unit(centres[0] + 1.2 * q)
    feats = np.vstack([targets, hard[None], others])
    with Gallery.open(tmp_path / "g", dim=DIM) as g:
        ids = g.add(feats, [Sighting("v.mp4", float(i), "cam") for i in range(len(feats))])
        target_ids, hard_id = set(ids[:8].tolist()), int(ids[8])
        plain = search_person(g, features=q, k=len(feats), threshold=-1.0, rerank=False)
        assert plain.hits[0].id == hard_id
        assert plain.rerank_distance is None and not plain.reranked
        rr = search_person(g, features=q, k=len(feats), threshold=-1.0, rerank=True)
        assert rr.reranked and len(rr.rerank_distance) == len(rr.hits)
        assert {h.id for h in rr.hits[:8]} == target_ids
        assert [h.id for h in rr.hits].index(hard_id) >= 8
        assert rr.rerank_distance == sorted(rr.rerank_distance)
        # Re-ranking sees only the k candidates: features are read for those and nothing else.
        seen: list[int] = []
        orig = g.features
        g.features = lambda i: (seen.extend(i), orig(i))[1]  # type: ignore[method-assign]
        small = search_person(g, features=q, k=30, threshold=-1.0)
        assert len(seen) == 30 and small.n_candidates == 30


def test_adaptive_rule_on_footage_where_everyone_looks_alike(tmp_path: Path):
    # Everybody shares a strong common component (cosine ~0.8 between any two people): a cosine threshold
    # matches the whole crowd; the standardised similarity only the target, although the target makes up
    # 1/7 of the gallery (robust statistics: its detections do not inflate the crowd's spread).
    rng = np.random.default_rng(5)
    c = unit(rng.standard_normal(DIM))
    u = unit(rng.standard_normal(DIM) - (rng.standard_normal(DIM) @ c) * c)
    u = unit(u - (u @ c) * c)
    crowd = unit(2 * c + unit(rng.standard_normal((300, DIM))))
    target = unit(2 * c + u + 0.1 * unit(rng.standard_normal((50, DIM))))
    q = unit(2 * c + u)
    with Gallery.open(tmp_path / "g", dim=DIM) as g:
        ids = g.add(np.vstack([target, crowd]), [Sighting("v.mp4", float(i), "cam") for i in range(350)])
        plain = search_person(g, features=q, k=400, threshold=0.5, adaptive=False, rerank=False)
        assert len(plain.hits) == 350 and plain.z_threshold is None and plain.z is None
        r = search_person(g, features=q, k=400, threshold=0.5, z_threshold=3.0, rerank=False)
        assert {h.id for h in r.hits} == set(ids[:50].tolist())
        assert r.z_threshold == 3.0 and r.reference["n"] == 350 and min(r.z) >= 3.0
        assert all(a.z is not None and a.z >= 3.0 for a in r.appearances)
        assert r.threshold_source == "given"
        # near misses: the 8 crowd detections most similar to the query (no re-ranking), with their z
        crowd_ids = [h.id for h in plain.hits if h.id not in set(ids[:50].tolist())][:8]
        assert [a.best.id for a in r.near_misses] == crowd_ids
        assert all(a.z is not None and a.z < 3.0 and a.hit_ids == (a.best.id,) for a in r.near_misses)
        default = search_person(g, features=q, k=400, threshold=0.5)
        assert default.z_threshold == cal.DEFAULT_Z_THRESHOLD and "z default" in default.threshold_source
        assert SearchResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
        text = render_html(r)
        assert "z &gt;= 3.00" in text and "(z " in text


def test_search_uses_the_calibrated_z_for_the_gallery_size(tmp_path: Path):
    from reidkit.models.zoo import ModelInfo

    # 140 other people (cosine to the query ~ N(0, 0.18)) and 10 detections of the target at cosine 0.30-0.75
    rng = np.random.default_rng(3)
    q = unit(rng.standard_normal(DIM))
    crowd = unit(rng.standard_normal((140, DIM)))
    r = rng.standard_normal((10, DIM))
    ortho = unit(r - (r @ q)[:, None] * q)  # unit vectors orthogonal to the query
    cos = np.linspace(0.30, 0.75, 10)[:, None]
    target = unit(cos * q + np.sqrt(1 - cos**2) * ortho)
    info = ModelInfo("m", source=str(tmp_path / "m.pth"))
    info.meta["calibration"] = {
        "threshold": 0.2, "z_threshold": 4.5,
        "z_by_gallery": {"negatives_per_query": 4000, "sizes": [100, 1000], "z": [2.0, 4.0]},
    }  # fmt: skip
    with Gallery.open(tmp_path / "g", dim=DIM) as g:
        ids = g.add(np.vstack([target, crowd]), [Sighting("v.mp4", float(i), "cam") for i in range(150)])
        sized = search_person(g, features=q, k=150, rerank=False, model_info=info)
        z150 = round(2.0 + 2.0 * np.log(1.5) / np.log(10), 3)  # log-size interpolation between 100 and 1000
        assert sized.z_threshold == z150 and "for a gallery of 150 detections" in sized.threshold_source
        given = search_person(g, features=q, k=150, rerank=False, model_info=info, z_threshold=z150)
        strict = search_person(g, features=q, k=150, rerank=False, model_info=info, z_threshold=4.5)
        assert [h.id for h in sized.hits] == [h.id for h in given.hits]
        assert given.threshold_source == "cosine calibrated (model metadata); z given"
        assert {h.id for h in strict.hits} < {h.id for h in sized.hits} <= set(ids[:10].tolist())
        assert min(sized.z) >= z150 > max(a.z for a in sized.near_misses if a.z is not None)


def test_relative_test_finds_the_target_among_a_few_people_of_one_scene(tmp_path: Path):
    from reidkit.models.zoo import ModelInfo

    # 8 people x 15 detections sharing one scene (a common component): the crowd sits at cosine ~0.66 with a
    # spread of ~0.10 between its few people, so an identical picture would reach z 3.3 and the target's
    # detections reach z 2.7-3.0, under the calibrated z 3.2; their relative similarity (s - median) / (1 - median)
    # is 0.81-0.89, the crowd's at most 0.35
    dim, rng = 16, np.random.default_rng(11)
    scene, people = unit(rng.standard_normal(dim)), unit(rng.standard_normal((8, dim)))
    noise = [0.6] + [0.3] * 7
    feats = np.vstack([unit(1.5 * scene + p + n * unit(rng.standard_normal((15, dim)))) for p, n in zip(people, noise)])  # noqa: B905
    q = unit(1.5 * scene + people[0])
    info = ModelInfo("m", source=str(tmp_path / "m.pth"))
    with Gallery.open(tmp_path / "g", dim=dim) as g:
        ids = g.add(feats, [Sighting("v.mp4", float(i), "cam") for i in range(len(feats))])
        target = set(ids[:15].tolist())
        info.meta["calibration"] = {"threshold": 0.5, "z_threshold": 3.2}  # no r test: z alone finds nobody
        assert search_person(g, features=q, k=200, rerank=False, model_info=info).hits == []
        plain = search_person(g, features=q, k=200, rerank=False, model_info=info, adaptive=False)
        assert len({h.id for h in plain.hits} - target) > 20  # cosine alone matches much of the crowd
        info.meta["calibration"] = {"threshold": 0.5, "z_threshold": 3.2, "r_threshold": 0.6}
        r = search_person(g, features=q, k=200, rerank=False, model_info=info)
        assert {h.id for h in r.hits} == target and r.r_threshold == 0.6 and min(r.r) >= 0.8 and max(r.z) < 3.2
        assert all(a.z is not None and a.z < 3.2 for a in r.near_misses)
        assert "(z &gt;= 3.20 or r &gt;= 0.60)" in render_html(r) and "r is how far the similarity" in render_html(r)
        assert SearchResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
        given = search_person(g, features=q, k=200, rerank=False, model_info=info, z_threshold=3.2)
        assert given.hits == [] and given.r_threshold is None  # a z threshold given: the z test alone
        # a crowd the model cannot tell apart: (1 - median) / spread under the z threshold, so even an identical
        # picture could not stand out; r would pass the crowd's upper half, and counts for nothing there
        m, spread = r.reference["median"][0], r.reference["spread"][0]
        assert (1 - m) / spread >= 3.2  # here it could: r counted
        info.meta["calibration"] = {"threshold": 0.5, "z_threshold": (1 - m) / spread + 0.1, "r_threshold": 0.6}
        closed = search_person(g, features=q, k=200, rerank=False, model_info=info)
        assert closed.hits == [] and closed.r_threshold == 0.6
        # ... unless the cosine threshold lies R_GATE_SPREADS (1) spreads above the crowd's median: then the model
        # tells the crowd apart though its spread caps z (the ensemble OSNet on the campus pictures), and r counts
        z_shut = (1 - m) / spread + 0.1
        for above, found in ((1.05, target), (0.95, set())):
            info.meta["calibration"] = {"threshold": m + above * spread, "z_threshold": z_shut, "r_threshold": 0.6}
            gated = search_person(g, features=q, k=200, rerank=False, model_info=info)
            assert {h.id for h in gated.hits} == found, above


def test_json_round_trip(world, tmp_path: Path):
    r = search_person(world.g, world.emb, ["target.jpg"], threshold=0.5, cameras=["cam1", "cam2"], time_range=(0, None),
                      review_floor=-1)  # fmt: skip
    path = save_json(r, tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["n_matches"] == len(r.hits) and len(data["appearances"]) == 3
    assert [a["track_id"] for a in data["near_misses"]] == [2]  # cam3 is filtered out
    back = load_json(path)
    assert back == r and back.near_misses == r.near_misses != []
    assert back.to_dict() == r.to_dict()
    del data["near_misses"]  # a result saved before near misses existed
    old = SearchResult.from_dict(data)
    assert old.near_misses == [] and old.appearances == r.appearances
    tr = search_person(world.g, track_id=track_row(world.g, "cam2.mp4", 5), threshold=0.5)
    assert SearchResult.from_dict(json.loads(json.dumps(tr.to_dict()))) == tr


class _Checker(HTMLParser):
    VOID: ClassVar[set[str]] = {"meta", "img", "br", "hr", "link", "input", "line", "rect", "path", "circle"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: list[str] = []
        self.tags: dict[str, int] = {}
        self.classes: list[str] = []
        self.imgs: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if "id" in a:
            self.ids.append(a["id"])
        self.classes += (a.get("class") or "").split()
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def _video(path: Path, n: int = 6) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert w.isOpened()
    for i in range(n):
        w.write(np.full((48, 64, 3), 30 * i, np.uint8))
    w.release()


def test_html_report(tmp_path: Path):
    video = tmp_path / "cam1.avi"
    _video(video)
    t = unit(np.ones(DIM))
    rng = np.random.default_rng(3)
    with Gallery.open(tmp_path / "g", dim=DIM) as g:
        g.add_source(str(video), "cam1")
        g.add_source(str(tmp_path / "missing.mp4"), "cam2")
        crop = g.save_crop(np.full((40, 20, 3), 200, np.uint8), str(video), "c0")
        recs = [
            Sighting(str(video), 1.0, frame=2, box=(10, 5, 30, 40), track_id=1, crop=crop),
            Sighting(str(video), 1.5, frame=3, box=(12, 5, 32, 40), track_id=1),
            Sighting(str(tmp_path / "missing.mp4"), 9.0, frame=4, box=(1, 1, 9, 9)),
        ]
        g.add(unit(t + 0.1 * rng.standard_normal((3, DIM))), recs)
        cv2.imwrite(str(tmp_path / "q.jpg"), np.full((64, 32, 3), 90, np.uint8))
        emb = FakeEmbedder({str(tmp_path / "q.jpg"): t, "array": t})
        r = search_person(g, emb, [str(tmp_path / "q.jpg"), np.zeros((8, 4, 3), np.uint8)], threshold=0.5)
    assert len(r.appearances) == 2
    out = write_html(r, tmp_path / "report.html")
    text = out.read_text()
    p = _Checker()
    p.feed(text)
    p.close()
    assert text.startswith("<!DOCTYPE html>") and not p.errors and not p.stack
    for section in ("query", "summary", "timeline", "appearances", "cam-0", "cam-1", "app-0", "app-1"):
        assert section in p.ids
    assert p.tags["svg"] == 1 and p.tags["section"] == 6
    assert sum(c == "mark" for c in p.classes) == 2  # one timeline mark per appearance
    assert p.classes.count("frame") == 1  # the video frame is shown; the missing video is skipped
    assert all(src.startswith("data:image/jpeg;base64,") for src in p.imgs)
    # 2 query pictures + the video appearance's crop (file, or cut from the frame) + its frame; the
    # appearance from the missing video has neither
    assert len(p.imgs) == 4 and "no crop" in text
    assert "cam1" in text and "cam2" in text and "0:01.0" in text
    assert r.near_misses == [] and "review" not in p.ids and "for review" not in text
    plain = render_html(r, frames=False)
    assert 'class="frame"' not in plain
    with Gallery.open(tmp_path / "g", read_only=True) as g:
        empty = search_person(g, emb, [str(tmp_path / "q.jpg")], threshold=1.0)
    text = render_html(empty)
    assert "No appearance above the match threshold" in text
    assert [len(a.hit_ids) for a in empty.near_misses] == [2, 1]  # the video track merged, the lone detection
    p = _Checker()
    p.feed(text)
    p.close()
    assert not p.errors and not p.stack and "review" in p.ids and [i for i in p.ids if "-" in i] == ["rev-0", "rev-1"]
    assert "Closest non-matches (for review)" in text and "did not pass the match rule" in text
    assert p.classes.count("near") == 2 and p.classes.count("frame") == 0 and p.tags["section"] == 5
    assert text.index('id="appearances"') < text.index('id="review"')
    assert 'id="review"' not in render_html(dataclasses.replace(empty, near_misses=[]))


def _appearance(camera: str, start: float, end: float, score: float = 0.9, i: int = 1):
    from reidkit.search.query.search import Appearance
    from reidkit.search.storage.records import Hit

    hit = Hit(i, 1, f"{camera}.mp4", camera, start, 0, (0, 0, 10, 20), 1, None, 0.5, score)
    return Appearance(camera, hit.source, 1, 1, start, end, score, hit, (i,), 1, track=i)


def _result(*apps) -> SearchResult:
    from reidkit.search.query.search import QueryInfo

    return SearchResult("g", QueryInfo("features"), 0.5, "given", 10, False, "mean", len(apps), [a.best for a in apps],
                        list(apps))  # fmt: skip


def test_timeline_one_clock_per_axis_and_readable_ticks():
    from reidkit.search.query.report import axis_ticks, timeline_svg

    day = 1_796_000_000.0  # 2026-11-30 ... UTC
    # nine photos copied at one minute (the same time): the axis names a few distinct seconds, not one label 5 times
    same = _result(*[_appearance("cam1", day, day, i=i) for i in range(1, 10)])
    svg = timeline_svg(same)
    ticks = [t.split(">")[1].split("<")[0] for t in svg.split('class="tick"')[1:]]
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks), ticks
    assert "UTC" in svg and svg.count("<svg") == 1 and 'data-clock="date"' in svg
    # dated and offset appearances are never on one axis: one timeline per clock, each saying which it is
    mixed = _result(_appearance("cam1", day, day + 30), _appearance("lobby", 0.0, 5.0, i=2))
    svg = timeline_svg(mixed)
    assert svg.count("<svg") == 2 and 'data-clock="date"' in svg and 'data-clock="offset"' in svg
    assert "no date" in svg and "0:00.0 – 20" not in svg
    # round steps, labels as short as the span allows
    labels = [label for _, label in axis_ticks(day, day + 3 * 3600, True)[0]]
    assert all(len(label) == 5 and label.endswith(("00", "30")) for label in labels), labels  # 14:00, 14:30, ...
    labels, caption = axis_ticks(day, day + 3 * 86400, True)
    assert len({text for _, text in labels}) == len(labels) and "–" in caption  # several days: dates in labels
    labels, caption = axis_ticks(0.0, 95.0, False)
    assert [text for _, text in labels] == ["0:00", "0:30", "1:00", "1:30"] and "no date" in caption


def test_terminal_table_and_time_format(world):
    from rich.console import Console

    r = search_person(world.g, world.emb, ["target.jpg"], threshold=0.5, review_floor=-1)
    console = Console(record=True, width=200)
    console.print(result_table(r))
    out = console.export_text()
    assert "cam1" in out and "cam2" in out and "3/4" in out
    # the track column: the gallery's track number (what --track takes), not the tracker's id in its source
    (row,) = [[c.strip() for c in line.split("│")] for line in out.splitlines() if "4/4" in line]  # cam2's track 5
    assert row[6] == str(track_row(world.g, "cam2.mp4", 5)) != "5"
    assert "3 appearances on 2 cameras" in out
    one = search_person(world.g, world.emb, ["target.jpg"], threshold=0.5, cameras=["cam1"])
    console = Console(record=True, width=200)
    console.print(result_table(one))
    assert "1 appearance on 1 camera " in console.export_text()  # not "1 appearances on 1 cameras"
    console = Console(record=True, width=200)
    print_result(r, console)
    out = console.export_text()
    assert REVIEW_TITLE in out and "cam3" in out and "no match" not in out
    assert out.index("3/4") < out.index(REVIEW_TITLE)  # matches first, then the candidates for review
    console = Console(record=True, width=200)
    print_result(search_person(world.g, world.emb, ["target.jpg"], threshold=0.999, review=2), console)
    out = console.export_text()
    assert out.startswith("no match (cosine >= 0.999") and REVIEW_TITLE in out and "cam3" not in out
    console = Console(record=True, width=200)
    print_result(search_person(world.g, world.emb, ["target.jpg"], threshold=0.999, review=0), console)
    assert "review" not in console.export_text()
    assert format_time(75.25) == "1:15.2" and format_time(3725.0) == "1:02:05.0"
    assert format_time(1_700_000_000.0) == "2023-11-14 22:13:20"


# -- calibration ----------------------------------------------------------------------------------------
def _best_f1_exact(pos: np.ndarray, neg: np.ndarray) -> float:
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-s)
    tp = np.cumsum(y[order])
    fp = np.cumsum(1 - y[order])
    f1 = 2 * tp / (tp + fp + len(pos))
    return float(s[order][np.argmax(f1)])


def test_calibration_separable_picks_the_middle_of_the_gap():
    rng = np.random.default_rng(0)
    stats = cal.PairStats.from_scores(rng.uniform(0.6, 0.9, 500), rng.uniform(-0.3, 0.4, 50_000))
    thr = stats.choose("f1")
    assert abs(thr - 0.5) < 0.01
    at = stats.at(thr)
    assert at["precision"] == 1.0 and at["recall"] == 1.0 and at["n_pos"] == 500 and at["n_neg"] == 50_000


def test_calibration_overlapping_gaussians():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(0.7, 0.08, 3000), rng.normal(0.3, 0.08, 300_000)
    stats = cal.PairStats.from_scores(pos, neg)
    thr = stats.choose("f1")
    assert abs(thr - _best_f1_exact(pos, neg)) < 0.01
    # the F1 optimum shifts above the equal-density point (0.5) because negatives are 100x more numerous
    assert 0.52 < thr < 0.62
    r = stats.at(thr)
    exact_p = (pos >= thr).sum() / ((pos >= thr).sum() + (neg >= thr).sum())
    assert abs(r["precision"] - exact_p) < 1e-9 and abs(r["recall"] - (pos >= thr).mean()) < 1e-9
    p90 = stats.choose("precision", target_precision=0.9)
    assert stats.at(p90)["precision"] >= 0.9 and stats.at(p90 - 2e-4)["precision"] < 0.9
    assert p90 < thr  # precision 0.9 is reached below the max-F1 threshold here
    summ = stats.summary()
    assert abs(summ["positive"]["mean"] - 0.7) < 0.01 and abs(summ["negative"]["std"] - 0.08) < 0.01
    with pytest.raises(ValueError, match="reaches precision"):
        cal.PairStats.from_scores(np.array([0.5]), np.array([0.9, 0.95])).choose("precision")


def test_pair_stats_counts_cross_camera_pairs_only():
    rng = np.random.default_rng(2)
    n = 60
    pids, cams = rng.integers(0, 8, n), rng.integers(0, 3, n)
    feats = unit(rng.standard_normal((8, DIM))[pids] + 0.4 * rng.standard_normal((n, DIM)))
    stats, zstats = cal.pair_stats(feats, pids, cams, chunk=17, reference=30)
    npos = sum(pids[i] == pids[j] and cams[i] != cams[j] for i in range(n) for j in range(i + 1, n))
    nneg = sum(pids[i] != pids[j] and cams[i] != cams[j] for i in range(n) for j in range(i + 1, n))
    assert (stats.n_pos, stats.n_neg) == (npos, nneg) == (zstats.n_pos, zstats.n_neg)
    thr = stats.choose()
    assert stats.at(thr)["f1"] > 0.9  # well-separated clusters

    q_p, g_p = np.array([1, 2]), np.array([1, 1, 2, -1, 0])
    q_c, g_c = np.array([0, 0]), np.array([0, 1, 1, 1, 1])
    cs, _ = cal.cross_pair_stats(
        cal.Labelled(unit(rng.standard_normal((2, DIM))), q_p, q_c),
        cal.Labelled(unit(rng.standard_normal((5, DIM))), g_p, g_c),
    )
    assert (cs.n_pos, cs.n_neg) == (2, 4)  # same-camera and junk pairs are left out; pid 0 is a negative


def test_calibrate_features_z_rule():
    rng = np.random.default_rng(4)
    n_ids, per = 40, 8
    pids = np.repeat(np.arange(n_ids), per)
    cams = np.tile(np.arange(4), n_ids * per // 4)
    feats = unit(rng.standard_normal((n_ids, DIM))[pids] + 0.4 * rng.standard_normal((len(pids), DIM)))
    rec = cal.calibrate_features(feats, pids, cams, reference=200)
    assert -1 < rec["threshold"] < 1 and 0 < rec["z_threshold"] < 30
    tr = rec["train"]
    assert set(tr) == {"cosine", "z", "r", "both"} and -4 < rec["r_threshold"] <= 1
    # the rule: cosine and (z or r): no more than cosine alone, at least cosine and z
    assert tr["both"]["tp"] <= tr["cosine"]["tp"] and tr["both"]["fp"] <= tr["cosine"]["fp"]
    f = cal._unit(feats)
    sims, z, r = cal._scores(f, f, cal._reference(len(f), 200, 0))
    i, j = np.triu_indices(len(f), 1)
    cross, same = cams[i] != cams[j], pids[i] == pids[j]
    both = cal.matches(sims[i, j], z[i, j], r[i, j], rec["threshold"], rec["z_threshold"], rec["r_threshold"])
    assert tr["both"]["tp"] == int((both & cross & same).sum())
    assert tr["both"]["fp"] == int((both & cross & ~same).sum())
    z_only = cal.matches(sims[i, j], z[i, j], r[i, j], rec["threshold"], rec["z_threshold"], None)
    assert int((z_only & cross & same).sum()) <= tr["both"]["tp"]
    assert tr["z"]["f1"] > 0.8 and tr["both"]["f1"] > 0.8
    assert rec["curve"]["z"][0]["threshold"] == 0.0 and len(rec["curve"]["cosine"]) == 21
    qi = np.arange(len(pids)) % per == 0  # one query picture per identity, the rest is the gallery
    query, gallery = cal.Labelled(feats[qi], pids[qi], cams[qi]), cal.Labelled(feats[~qi], pids[~qi], cams[~qi])
    check = cal.check_features(query, gallery, 0.3, 3.0)
    assert check["both"]["n_pos"] == check["cosine"]["n_pos"] > 0 and "max_f1_z_threshold" in check
    table = rec["z_by_gallery"]  # 320 images of 40 people: each meets 234 others on other cameras
    assert table["negatives_per_query"] == pytest.approx(2 * tr["z"]["n_neg"] / len(pids), abs=0.1)
    assert table["sizes"] == [100, 150, 200] and max(table["z"]) <= rec["z_threshold"]
    check = cal.check_features(query, gallery, 0.3, 3.0, sizes=[(100, 2.5)])
    assert check["z_by_gallery"]["sizes"] == [100] and 0 < check["z_by_gallery"]["f1_at_calibrated"][0] <= 1


def test_relative_similarity_and_the_rule_by_hand():
    sims = np.array([[0.9, 0.5, 0.7], [0.2, 0.6, 1.0]], np.float32)
    r = cal.relative(sims, np.array([0.5, 0.6]))  # (s - median) / (1 - median), per row
    np.testing.assert_allclose(r, [[0.8, 0.0, 0.4], [-1.0, 0.0, 1.0]], atol=1e-6)
    z = np.array([[5.0, 0.0, 2.0], [1.0, 0.0, 3.0]], np.float32)
    # cosine >= 0.6 and (z >= 4 or r >= 0.35)
    expect = [[True, False, True], [False, False, True]]
    np.testing.assert_array_equal(cal.matches(sims, z, r, 0.6, 4.0, 0.35), expect)
    # without an r threshold: cosine and z
    expect = [[True, False, False], [False, False, False]]
    np.testing.assert_array_equal(cal.matches(sims, z, r, 0.6, 4.0, None), expect)


def test_weighted_f1_threshold_by_hand():
    # positives at 0.9, 0.7, 0.5; negatives: one at 0.8, four at 0.6, ten at 0.3
    s = cal.PairStats.from_scores(np.array([0.9, 0.7, 0.5]), np.array([0.8] + [0.6] * 4 + [0.3] * 10))
    # F1 of ">= t" with each negative counted w times: 2tp / (2tp + w fp + fn)
    # t in (0.8, 0.9]: tp 1, fp 0, fn 2 -> 2/4 = 0.5; t in (0.7, 0.8]: tp 1, fp 1 -> 2/(4 + w)
    # t in (0.6, 0.7]: tp 2, fp 1, fn 1 -> 4/(5 + w); t in (0.5, 0.6]: tp 2, fp 5 -> 4/(5 + 5w)
    # t in (0.3, 0.5]: tp 3, fp 5, fn 0 -> 6/(6 + 5w); t <= 0.3: 6/(6 + 15w)
    # w = 1: 0.5, 0.4, 0.667, 0.4, 0.545, 0.286 -> (0.6, 0.7]; w = 0.1: 0.5, 0.488, 0.784, 0.727, 0.923, 0.8
    # -> (0.3, 0.5]; w = 10: 0.5, 0.143, 0.267, 0.073, 0.107, 0.038 -> (0.8, 0.9]
    assert 0.6 < s.choose("f1") <= 0.7
    assert 0.3 < s.choose("f1", neg_weight=0.1) <= 0.5
    assert 0.8 < s.choose("f1", neg_weight=10.0) <= 0.9


def test_z_by_gallery_matches_a_brute_force_reference():
    rng = np.random.default_rng(8)
    pos, neg = rng.normal(5.0, 1.2, 2000), rng.standard_t(3, 400_000)  # heavy-tailed crowd
    z = cal.PairStats.from_scores(pos, neg, *cal.Z_RANGE)
    negq, z_full = 4000.0, z.choose("f1")
    table = cal.z_by_gallery(z, negq, z_full)
    assert table["sizes"] == [n for n in cal.GALLERY_SIZES if n < negq] and table["negatives_per_query"] == negq
    assert all(a <= b for a, b in zip(table["z"], table["z"][1:], strict=False))  # bigger gallery, never lower
    assert max(table["z"]) <= z_full and table["z"][0] < z_full - 0.5  # small galleries: clearly lower
    for n, zt in zip(table["sizes"], table["z"], strict=True):
        w = n / negq  # reference: F1 at every candidate threshold, negatives counted w times
        cands = np.linspace(-10, 30, 4001)
        tp = (pos[None, :] >= cands[:, None]).sum(1)
        fp = np.searchsorted(np.sort(neg), cands, side="left")
        fp = len(neg) - fp
        f1 = 2 * tp / (2 * tp + w * fp + (len(pos) - tp))
        best = f1.max()
        mine = 2 * (pos >= zt).sum() / (2 * (pos >= zt).sum() + w * (neg >= zt).sum() + (pos < zt).sum())
        assert mine >= best - 2e-3, (n, zt, mine, best)


def test_z_for_interpolates_the_table_by_gallery_size():
    t = cal.Thresholds(0.5, 4.5, "calibrated (x)", ((100.0, 3.0), (1000.0, 4.0), (4000.0, 4.5)))
    assert t.z_for(50) == 3.0 and t.z_for(100) == 3.0 and t.z_for(1000) == 4.0
    assert t.z_for(316) == pytest.approx(3.5, abs=1e-3)  # halfway in log size
    assert t.z_for(4000) == 4.5 and t.z_for(10**6) == 4.5
    assert cal.Thresholds(0.5, 4.5, "default").z_for(120) == 4.5  # no table: the calibrated z everywhere
    rec = {"threshold": 0.5, "z_threshold": 4.5, "z_by_gallery": {"negatives_per_query": 4000, "sizes": [100, 1000],
           "z": [3.0, 4.0]}}  # fmt: skip
    assert cal._table(rec, 4.5) == ((100.0, 3.0), (1000.0, 4.0), (4000.0, 4.5))


def test_threshold_lookup(tmp_path: Path):
    from reidkit.models.zoo import ModelInfo

    assert cal.threshold_for(None) == (cal.DEFAULT_THRESHOLD, "default (no model given)")
    weights = tmp_path / "my_model.pth"
    info = ModelInfo("osnet_x0_25", source=str(weights))
    assert cal.load_threshold(info) == cal.DEFAULT_THRESHOLD
    # by architecture name, but calibrated for other weights: ignored
    cal.save_calibration(tmp_path / "calibration_osnet_x0_25.json", {"threshold": 0.61, "weights": "other.pth"})
    assert cal.load_threshold(info) == cal.DEFAULT_THRESHOLD
    cal.save_calibration(tmp_path / cal.calibration_file_name(weights), {"threshold": 0.63, "weights": "my_model.pth"})
    thr, where = cal.threshold_for(info)
    assert thr == 0.63 and where.endswith("calibration_my_model.json; default z)")
    assert cal.thresholds_for(info).z_threshold == cal.DEFAULT_Z_THRESHOLD  # a record without z_threshold
    cal.save_calibration(tmp_path / cal.calibration_file_name(weights), {"threshold": 0.63, "z_threshold": 3.5})
    path = tmp_path / "calibration_my_model.json"
    assert cal.thresholds_for(info) == cal.Thresholds(0.63, 3.5, f"calibrated ({path})")
    info.meta["calibration"] = {"threshold": 0.7, "z_threshold": 4.5}
    assert cal.thresholds_for(info) == cal.Thresholds(0.7, 4.5, "calibrated (model metadata)")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="threshold"):
        cal.load_calibration(tmp_path / "bad.json")
    bad = {"threshold": 0.5, "z_threshold": 4.0, "z_by_gallery": {"negatives_per_query": 900, "sizes": [100], "z": []}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"bad\.json: z_by_gallery"):
        cal.load_calibration(tmp_path / "bad.json")


@pytest.mark.data
def test_calibrate_real_model_small(data_root: Path, weights_root: Path):
    import torch

    from reidkit.extract import make_embedder

    torch.set_num_threads(1)
    emb, info = make_embedder("osnet_x0_25", weights_root / "reid" / "osnet_x0_25_market1501.pth", batch_size=16)
    rec = cal.calibrate(emb, "market1501", root=data_root, n_ids=6, seed=0, test=False, model_info=info)
    assert rec["split"] == "train" and rec["n_ids"] == 6 and rec["weights"] == "osnet_x0_25_market1501.pth"
    assert rec["train"]["both"]["n_pos"] > 0 and 0.0 < rec["threshold"] < 1.0 and rec["z_threshold"] > 0
    dist = rec["distributions"]["cosine"]
    assert dist["positive"]["mean"] > dist["negative"]["mean"]


# -- command line ---------------------------------------------------------------------------------------
def test_cli_search(world, tmp_path: Path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from reidkit.cli import search as cli_search

    app = typer.Typer()
    cli_search.register(app)
    monkeypatch.setattr(cli_search.api, "load_model", lambda *args, **kw: cli_search.api.LoadedModel(None, None))
    gdir = str(world.g.root)
    tid = track_row(world.g, "cam1.mp4", 1)
    world.g.close()
    runner = CliRunner()
    args = ["search", "--gallery", gdir, "--track", str(tid), "--threshold", "0.5", "--camera", "cam2"]
    res = runner.invoke(app, [*args, "--json", str(tmp_path / "o.json"), "--html", str(tmp_path / "o.html")])
    assert res.exit_code == 0, res.output
    assert f"searched for track {tid} (cam1, cam1.mp4, 4 crops, 0:10.0 – 0:13.0)" in res.output  # whom (issue 22)
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["query"]["kind"] == "track" and {a["camera"] for a in data["appearances"]} == {"cam2"}
    assert (tmp_path / "o.html").read_text().startswith("<!DOCTYPE html>")
    assert data["near_misses"] == []  # every cam2 candidate matched
    base = ["search", "--gallery", gdir, "--track", str(tid), "--threshold", "0.5", "--review-floor", "-1"]
    res = runner.invoke(app, [*base, "--review", "1", "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0 and "for review" in res.output, res.output
    assert len(json.loads((tmp_path / "r.json").read_text())["near_misses"]) == 1
    res = runner.invoke(app, [*base, "--review", "0", "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0 and "for review" not in res.output, res.output
    assert json.loads((tmp_path / "r.json").read_text())["near_misses"] == []
    res = runner.invoke(app, [*base, "--review", "-1"])
    assert res.exit_code == 2 and "--review" in res.output
    res = runner.invoke(app, ["search", "--gallery", gdir, "--track", str(tid), "--since", "60", "--until", "10"])
    assert res.exit_code == 2 and "before" in res.output
    for bad, msg in (
        (["search", "--gallery", gdir], "--image PATH"),
        (["search", "--gallery", str(tmp_path / "nope"), "--track", "1"], "not a reidkit gallery"),
        (["search", "--gallery", gdir, "--image", str(tmp_path / "x.jpg")], "no such image"),
        (["search", "--gallery", gdir, "--track", "999"], "no track 999"),
        (["search", "--gallery", gdir, "--track", "1", "--since", "yesterday"], "ISO-8601"),
    ):
        res = runner.invoke(app, bad)
        assert res.exit_code == 2, (bad, res.output)
        assert msg in res.output, (bad, res.output)
