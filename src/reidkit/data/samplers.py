"""P x K identity batch sampler (torchreid's ``RandomIdentitySampler`` semantics), DDP-aware.

Each batch holds ``P`` identities x ``K`` images. Per epoch every identity's images are shuffled and
cut into groups of ``K`` (an identity with fewer than ``K`` images is sampled with replacement up to
``K``; an incomplete last group is dropped); batches then draw ``P`` random identities that still
have groups until fewer than ``P`` are left. One epoch thus covers the data roughly once.

Everything is a pure function of ``(seed, epoch)``: call :meth:`PKBatchSampler.set_epoch` before
each epoch. Under DDP the identities are shuffled and dealt out to the ranks each epoch, so ranks
see disjoint identities; every rank computes all ranks' batch lists and keeps the common minimum
length, so all ranks run the same number of iterations without communicating.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

__all__ = ["PKBatchSampler"]


class PKBatchSampler(Sampler[list[int]]):
    """Batches of ``P * K`` dataset indices: ``P`` identities x ``K`` images each.

    ``pids``: the identity of every dataset item (index i -> ``pids[i]``). ``rank`` and
    ``world_size`` select this process's share under DDP.
    """

    def __init__(
        self,
        pids: Sequence[int],
        ids_per_batch: int,
        instances_per_id: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if ids_per_batch < 1 or instances_per_id < 1:
            raise ValueError("ids_per_batch (P) and instances_per_id (K) must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.P, self.K = ids_per_batch, instances_per_id
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        index: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            index[int(pid)].append(i)
        self.index_by_pid = dict(sorted(index.items()))
        self.pids = np.asarray(list(self.index_by_pid), dtype=np.int64)
        if len(self.pids) < self.P * world_size:
            raise ValueError(
                f"{len(self.pids)} identities cannot fill {world_size} rank(s) x {self.P} identities per batch; "
                "lower ids_per_batch (P)"
            )
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches :meth:`__iter__` yields (deterministic given the seed)."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
        self._cache = None

    def rank_pids(self, epoch: int, rank: int) -> np.ndarray:
        """The identities dealt to ``rank`` in ``epoch``."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.pids)
        return np.sort(order[rank :: self.world_size])

    def _rank_batches(self, epoch: int, rank: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch, rank + 1])
        groups: dict[int, list[np.ndarray]] = {}
        for pid in self.rank_pids(epoch, rank).tolist():
            idxs = np.asarray(self.index_by_pid[pid])
            short = len(idxs) < self.K  # sampled with replacement up to K
            idxs = rng.choice(idxs, size=self.K, replace=True) if short else rng.permutation(idxs)
            n = len(idxs) // self.K
            groups[pid] = [idxs[j * self.K : (j + 1) * self.K] for j in range(n)]
        available = [pid for pid, g in groups.items() if g]
        batches: list[list[int]] = []
        while len(available) >= self.P:
            chosen = rng.choice(len(available), size=self.P, replace=False)
            batch: list[int] = []
            for j in chosen.tolist():
                batch.extend(groups[available[j]].pop().tolist())
            batches.append(batch)
            available = [pid for pid in available if groups[pid]]
        return batches

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        per_rank = [self._rank_batches(epoch, r) for r in range(self.world_size)]
        n = min(len(b) for b in per_rank)
        out = per_rank[self.rank][:n]
        self._cache = (epoch, out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        yield from (list(b) for b in self.batches())

    def __len__(self) -> int:
        return len(self.batches())
