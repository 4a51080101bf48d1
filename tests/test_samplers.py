"""reidkit.data: the P x K sampler (composition, determinism, DDP disjointness), transforms, loaders."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reidkit.data import (
    ImageDataset,
    PKBatchSampler,
    build_test_transform,
    build_train_loader,
    build_train_transform,
)
from reidkit.datasets.base import Sample
from reidkit.embed import Preprocess


def make_pids(counts: list[int]) -> list[int]:
    """Dataset pids: identity i has counts[i] images (interleaved, as a real list might be)."""
    pids = [pid for pid, n in enumerate(counts) for _ in range(n)]
    return [pids[i] for i in np.random.default_rng(0).permutation(len(pids))]


COUNTS = [6, 5, 4, 3, 1, 8, 2, 7, 6, 4, 9, 5]  # 12 identities, 60 images, some with fewer than K


def test_batches_are_p_ids_times_k_images() -> None:
    pids = make_pids(COUNTS)
    s = PKBatchSampler(pids, ids_per_batch=3, instances_per_id=4, seed=1)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for b in batches:
        assert len(b) == 12
        per_id = Counter(pids[i] for i in b)
        assert len(per_id) == 3 and set(per_id.values()) == {4}
        # consecutive runs of K share the identity (P blocks of K)
        assert all(len({pids[i] for i in b[j : j + 4]}) == 1 for j in range(0, 12, 4))


def test_short_identities_are_sampled_with_replacement_and_epoch_covers_data() -> None:
    pids = make_pids(COUNTS)
    s = PKBatchSampler(pids, ids_per_batch=3, instances_per_id=4, seed=1)
    seen_short = False
    for epoch in range(10):
        s.set_epoch(epoch)
        for b in s:
            for pid in Counter(pids[i] for i in b):
                if COUNTS[pid] < 4:
                    seen_short = True
                    assert len({i for i in b if pids[i] == pid}) <= COUNTS[pid]  # repeats
        # torchreid length: sum over ids of max(n, K) // K groups of K, minus leftovers (< P groups)
        groups = sum(max(n, 4) // 4 for n in COUNTS)
        assert groups // 3 - 3 <= len(s) <= groups // 3
    assert seen_short


def test_deterministic_given_seed_and_epoch() -> None:
    pids = make_pids(COUNTS)
    a = PKBatchSampler(pids, 3, 2, seed=5)
    b = PKBatchSampler(pids, 3, 2, seed=5)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    c = PKBatchSampler(pids, 3, 2, seed=6)
    c.set_epoch(3)
    assert list(a) != list(c)
    # state_dict round trip
    d = PKBatchSampler(pids, 3, 2, seed=0)
    d.load_state_dict(a.state_dict())
    assert list(d) == list(a)


def test_ranks_draw_disjoint_identities_and_equal_batch_counts() -> None:
    pids = make_pids(COUNTS)
    for epoch in range(5):
        ranks = [PKBatchSampler(pids, 2, 2, seed=3, rank=r, world_size=2) for r in range(2)]
        for r in ranks:
            r.set_epoch(epoch)
        ids = [{pids[i] for b in r for i in b} for r in ranks]
        assert ids[0] and ids[1] and not ids[0] & ids[1]
        assert len(ranks[0]) == len(ranks[1]) > 0
        dealt = [set(r.rank_pids(epoch, r.rank).tolist()) for r in ranks]
        assert dealt[0] | dealt[1] == set(range(len(COUNTS))) and not dealt[0] & dealt[1]
    # the partition changes between epochs
    r0 = PKBatchSampler(pids, 2, 2, seed=3, rank=0, world_size=2)
    assert any(set(r0.rank_pids(0, 0)) != set(r0.rank_pids(e, 0)) for e in range(1, 5))


def test_sampler_rejects_too_few_identities() -> None:
    with pytest.raises(ValueError, match="identities"):
        PKBatchSampler([0, 0, 1, 1], ids_per_batch=2, instances_per_id=2, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        PKBatchSampler([0, 1], 1, 1, rank=2, world_size=2)


# ------------------------------------------------------------------------ transforms and loaders


def random_image(seed: int, size: tuple[int, int] = (23, 50)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_test_transform_matches_embed_preprocess() -> None:
    for seed, (h, w) in enumerate([(32, 16), (64, 32), (50, 23)]):
        im = random_image(seed)
        ours = build_test_transform(h, w)(im)
        assert ours.shape == (3, h, w) and ours.dtype == torch.float32
        np.testing.assert_allclose(ours.numpy(), Preprocess(h, w, method="pil")(im), atol=1e-5)


def test_train_transform_shapes_and_augmentations() -> None:
    im = random_image(0, (16, 32))
    t = build_train_transform(32, 16, hflip=1.0, pad=0, random_erasing=0.0)
    flipped = t(im)
    plain = build_test_transform(32, 16)(im)
    assert torch.allclose(flipped, plain.flip(-1), atol=1e-6)
    t_erase = build_train_transform(32, 16, hflip=0, pad=0, random_erasing=1.0)
    torch.manual_seed(0)
    erased = t_erase(im)
    assert (erased == 0).all(0).sum() > 0  # a rectangle filled with 0 (= the mean after normalising)
    full = build_train_transform(32, 16)(im)
    assert full.shape == (3, 32, 16) and full.dtype == torch.float32


@pytest.fixture
def image_samples(tmp_path: Path) -> list[Sample]:
    samples = []
    for pid in range(6):
        for k in range(3):
            p = tmp_path / f"{pid}_{k}.png"
            random_image(pid * 10 + k, (16, 32)).save(p)
            samples.append(Sample(str(p), pid, k % 2))
    return samples


def test_image_dataset_items_and_seeded_augmentation(image_samples: list[Sample]) -> None:
    ds = ImageDataset(image_samples, build_train_transform(32, 16))
    x, pid, camid, index = ds[4]
    assert x.shape == (3, 32, 16) and (pid, camid, index) == (1, 1, 4)
    state = torch.get_rng_state()
    a, b = ds[(4, 123)][0], ds[(4, 123)][0]
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert any(not torch.equal(a, ds[(4, s)][0]) for s in range(1, 6))


@pytest.mark.parametrize("workers", [0, 1])
def test_train_loader_batches_and_determinism(image_samples: list[Sample], workers: int) -> None:
    kw = dict(height=32, width=16, ids_per_batch=3, instances_per_id=2, seed=4, workers=workers)
    loader, sampler = build_train_loader(image_samples, **kw)  # type: ignore[arg-type]
    sampler.set_epoch(2)
    batches = list(loader)
    assert len(batches) == len(loader) == len(sampler) > 0
    images, pids, camids, idx = batches[0]
    assert images.shape == (6, 3, 32, 16) and pids.shape == camids.shape == idx.shape == (6,)
    assert [image_samples[i].pid for i in idx.tolist()] == pids.tolist()
    # same seed and epoch -> same images, whatever the number of workers
    ref_loader, ref_sampler = build_train_loader(image_samples, **{**kw, "workers": 0})  # type: ignore[arg-type]
    ref_sampler.set_epoch(2)
    for (x, p, _, _), (y, q, _, _) in zip(batches, ref_loader, strict=True):
        assert torch.equal(x, y) and torch.equal(p, q)
