"""Pixels in: file paths, bytes, PIL images, arrays and tensors as RGB, and the one checked decoder for
untrusted pictures (:func:`open_picture`: empty / one of the documented formats / pixel limit /
decompression bomb / truncated; :func:`probe_picture` for the header checks alone), which photo ingest
and the search service's uploads both use. ``embed`` and ``pose`` import from here; nothing here
imports the rest of reidkit.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor

MAX_PIXELS = 120_000_000  # larger pictures are refused (decompression bombs); 120 MP covers real cameras
# The formats an untrusted picture may be in (README): Pillow tries no other decoder on it. MPO is how Pillow
# names a camera's multi-picture JPEG; it is opened by the JPEG decoder.
PICTURE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_IMREAD = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # as PIL: no EXIF rotation
_EXIF_IFD, _DATETIME_ORIGINAL, _DATETIME_DIGITIZED = 0x8769, 36867, 36868
_SUBSEC_ORIGINAL, _OFFSET_ORIGINAL = 37521, 36881


class ImageError(ValueError):
    """An input image is missing, unreadable or of an unexpected shape (the message names it)."""


def to_pil(image: ImageInput, bgr: bool = False) -> Image.Image:
    """Any supported input as an RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, str | os.PathLike):
        try:
            with Image.open(image) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise ImageError(f"{image}: no such image file") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise ImageError(f"{image}: not a readable image ({exc})") from None
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim != 3 or t.shape[0] != 3:
            raise ImageError(f"tensor image must be 3 x H x W (RGB), got shape {tuple(t.shape)}")
        if t.is_floating_point():
            t = (t.clamp(0, 1) * 255).round()
        return Image.fromarray(t.to(torch.uint8).permute(1, 2, 0).numpy())
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError(f"array image must be H x W x 3 uint8, got {image.dtype} {image.shape}")
        return Image.fromarray(image[:, :, ::-1] if bgr else image)
    raise ImageError(f"unsupported image type {type(image).__name__}")


def to_rgb_array(image: ImageInput, bgr: bool = False) -> np.ndarray:
    """Any supported input as an H x W x 3 uint8 RGB array (files decoded by OpenCV, else PIL)."""
    if isinstance(image, str | os.PathLike):
        try:
            data = np.fromfile(image, dtype=np.uint8)
        except FileNotFoundError:
            raise ImageError(f"{image}: no such image file") from None
        except OSError as exc:
            raise ImageError(f"{image}: not a readable image ({exc})") from None
        im = cv2.imdecode(data, _IMREAD) if data.size else None
        if im is not None:
            return im[:, :, ::-1]
        return np.asarray(to_pil(image))  # formats OpenCV lacks; PIL names the file if it fails too
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError(f"array image must be H x W x 3 uint8, got {image.dtype} {image.shape}")
        return image[:, :, ::-1] if bgr else image
    return np.asarray(to_pil(image, bgr))


class PhotoError(ImageError):
    """A picture cannot be decoded (the message names the file and why).

    ``kind`` says which check failed (``empty``, ``format``, ``too_large``, ``bomb``, ``truncated``,
    ``unreadable``), ``detail`` what the decoder said and ``size`` the declared ``(w, h)`` if known,
    so a caller (the search service) can word its own answer."""

    def __init__(self, message: str, kind: str = "unreadable", detail: str = "", size: tuple[int, int] | None = None):
        super().__init__(message)
        self.kind, self.detail, self.size = kind, detail, size


@dataclass(frozen=True, slots=True, eq=False)
class Photo:
    """A decoded picture (BGR, EXIF orientation applied) and its EXIF capture time, if any."""

    image_bgr: np.ndarray
    exif_time: float | None


def _exif_time(exif: Any) -> float | None:
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # a broken EXIF block just means no EXIF time
        return None
    raw = sub.get(_DATETIME_ORIGINAL) or sub.get(_DATETIME_DIGITIZED)
    if not raw:
        return None
    try:
        t = datetime.strptime(str(raw).strip().rstrip("\x00"), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    frac = str(sub.get(_SUBSEC_ORIGINAL) or "").strip().rstrip("\x00")
    if frac.isdigit():
        t += timedelta(seconds=float(f"0.{frac}"))
    offset = str(sub.get(_OFFSET_ORIGINAL) or "").strip().rstrip("\x00")
    if m := re.fullmatch(r"([+-])(\d\d):?(\d\d)", offset):
        sign = 1 if m.group(1) == "+" else -1
        t = t.replace(tzinfo=timezone(sign * timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))))
    return t.timestamp()  # naive: local time


def probe_picture(
    data: bytes,
    name: str | Path,
    max_pixels: int = MAX_PIXELS,
    *,
    formats: Sequence[str] | None = PICTURE_FORMATS,
    draft: tuple[int, int] | None = None,
) -> Any:
    """A picture's bytes opened, not decoded, after the checks that need only its header: not empty, one
    of ``formats`` (default :data:`PICTURE_FORMATS`, the documented ones; nothing else is even tried, so
    no other decoder, and no Ghostscript for EPS, ever runs on untrusted bytes; None: every format
    Pillow knows), at most ``max_pixels`` (PIL's decompression-bomb limit also applies). With ``draft``
    ``(width, height)``, a JPEG is set to decode at the smallest of 1/2, 1/4, 1/8 scale that still
    covers it (libjpeg's DCT scaling: a 40-megapixel photo costs about what a 0.6-megapixel one does);
    ``img.size`` is then the size it will decode to. PhotoError otherwise (``kind`` says which check)."""
    if not data:
        raise PhotoError(f"{name}: not a readable image (empty file)", "empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=None if formats is None else list(formats))
            w, h = img.size
            if w * h > max_pixels:
                msg = f"{name}: {w}x{h} pixels is more than the {max_pixels:,} allowed"
                raise PhotoError(msg, "too_large", size=(w, h))
            if w < 1 or h < 1:
                raise PhotoError(f"{name}: not a readable image ({w}x{h} pixels)", "unreadable", size=(w, h))
            if draft is not None and img.format in ("JPEG", "MPO") and img.mode in ("RGB", "L", "CMYK", "YCbCr"):
                img.draft(img.mode, draft)
    except PhotoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoError(f"{name}: not a readable image ({exc})", "bomb", str(exc)) from None
    except UnidentifiedImageError:
        why = "not " + (", ".join(formats) if formats else "a picture format Pillow knows")
        raise PhotoError(f"{name}: not a readable image ({why})", "format", why) from None
    except Exception as exc:  # PIL raises many kinds (OSError, SyntaxError, ValueError, EOFError) for bad files
        raise _unreadable(name, exc) from None
    return img


def load_picture(img: Any, name: str | Path) -> Any:
    """Decode an image that :func:`probe_picture` opened (PhotoError when its pixels are truncated or bad)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoError(f"{name}: not a readable image ({exc})", "bomb", str(exc)) from None
    except Exception as exc:
        raise _unreadable(name, exc) from None
    return img


def _unreadable(name: str | Path, exc: Exception) -> PhotoError:
    why = str(exc).split(" <_io.")[0] or type(exc).__name__  # not the address of the in-memory file
    kind = "truncated" if "truncated" in why or isinstance(exc, EOFError) else "unreadable"
    return PhotoError(f"{name}: not a readable image ({why})", kind, why)


def open_picture(data: bytes, name: str | Path, max_pixels: int = MAX_PIXELS, **probe: Any) -> tuple[Any, Any]:
    """A picture's bytes as a fully decoded PIL image and its EXIF block, after the checks every
    untrusted picture gets: :func:`probe_picture`'s (not empty, one of the documented ``formats``, at
    most ``max_pixels``, checked from the header before any pixel is decoded; ``probe`` holds its
    keywords, ``formats`` and ``draft``) and whole (a truncated file fails, PIL does not pad it with
    grey as OpenCV does). PhotoError otherwise."""
    img = probe_picture(data, name, max_pixels, **probe)
    try:
        exif = img.getexif()
    except Exception as exc:
        raise _unreadable(name, exc) from None
    return load_picture(img, name), exif


def decode_photo(data: bytes, name: str | Path, max_pixels: int = MAX_PIXELS) -> Photo:
    """Decode a picture's bytes (:func:`open_picture`'s checks); EXIF orientation is applied, so
    boxes are in upright coordinates."""
    from PIL import ImageOps

    img, exif = open_picture(data, name, max_pixels)
    rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    return Photo(np.ascontiguousarray(rgb[:, :, ::-1]), _exif_time(exif))


def read_photo(path: str | Path) -> np.ndarray:
    """A picture file as BGR uint8, upright (PhotoError when it cannot be read)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PhotoError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_photo(data, path).image_bgr
