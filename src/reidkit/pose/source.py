"""Keypoint channels for a HOReID model's input: the keypoints of each image, cached by content.

:class:`KeypointSource` gives, for a list of images (paths or arrays), the ``(13, H, W)`` keypoint
maps that follow the RGB channels of a HOReID model's input (see
:func:`reidkit.pose.skeleton.render_nodes`). Image files are looked up in the keypoint cache by
content and computed (then cached) when missing, so embedding any dataset, folder or gallery with a
HOReID model needs no separate step; in-memory arrays (ingest's crops) are computed directly.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from reidkit.pose.cache import KeypointCache, default_cache_path, image_digest
from reidkit.pose.movenet import MoveNet
from reidkit.pose.skeleton import coco_to_horeid, render_nodes

SIGMA = 0.75  # Gaussian width of a keypoint map, in backbone-map cells at output stride 16 (12 input pixels)
STRIDE = 16


class KeypointSource:
    """Keypoint maps of images for a HOReID model (``maps(images, bgr, (H, W))``), thread-safe."""

    def __init__(
        self,
        pose: MoveNet | None = None,
        cache: KeypointCache | str | os.PathLike[str] | bool | None = True,
        sigma_px: float = SIGMA * STRIDE,
    ) -> None:
        self.pose = pose or MoveNet()
        if cache is True:
            cache = KeypointCache(default_cache_path(self.pose.id), self.pose.id)
        elif cache is not None and cache is not False and not isinstance(cache, KeypointCache):
            cache = KeypointCache(cache, self.pose.id)
        self.cache: KeypointCache | None = cache if isinstance(cache, KeypointCache) else None
        self.sigma_px = sigma_px
        self._lock = threading.Lock()

    def keypoints(self, image: Any, bgr: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
        """COCO ``(17, 3)`` keypoints and the image's ``(h, w)``."""
        from reidkit.imaging import to_rgb_array

        if isinstance(image, str | os.PathLike) and self.cache is not None:
            digest = image_digest(image)
            with self._lock:
                hit = self.cache.get([digest]).get(digest)
            if hit is not None:
                w, h, kp = hit
                return kp, (h, w)
            rgb = to_rgb_array(image)
            kp = self.pose.predict_one(rgb)
            with self._lock:
                self.cache.put([(digest, rgb.shape[1], rgb.shape[0], kp)])
            return kp, rgb.shape[:2]
        rgb = to_rgb_array(image, bgr)
        return self.pose.predict_one(rgb), rgb.shape[:2]

    def maps(self, images: Sequence[Any], bgr: bool, size: tuple[int, int]) -> np.ndarray:
        """``(N, 13, H, W)`` float32 keypoint maps of ``images`` at the model's input ``size``."""
        out = np.empty((len(images), 13, *size), np.float32)
        for i, im in enumerate(images):
            kp, hw = self.keypoints(im, bgr)
            out[i] = render_nodes(coco_to_horeid(kp), hw, size, self.sigma_px * size[0] / 256)
        return out
