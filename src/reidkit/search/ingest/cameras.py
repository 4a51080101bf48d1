"""Cameras as configuration: name each camera once (name -> URI and options) and start them all with
``reidkit ingest --cameras cameras.yaml``.

.. code-block:: yaml

    cameras:
      - name: entrance          # the camera name sightings carry (letters, digits, _ . -)
        uri: rtsp://user:secret@10.0.0.7:554/stream1
        fps: 5                  # optional: take at most this many frames a second from the stream
        transport: tcp          # optional: RTSP over udp (default) or tcp
      - name: lobby
        uri: rtsp://10.0.0.8/live

A file or photo folder may be listed too (``uri: /data/cam3.mp4``): it is ingested as fast as the
machine allows, beside the live streams. Errors name the file, the camera and what was expected.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class CameraError(ValueError):
    """A cameras file that cannot be used (the message names the file and the camera)."""


class Camera(BaseModel):
    """One camera: its ``name``, where to read it (``uri``), an optional frame-rate cap and RTSP transport."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    uri: str = Field(min_length=1)
    fps: float | None = Field(default=None, gt=0, le=120)
    transport: Literal["udp", "tcp"] = "udp"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.fullmatch(v):
            raise ValueError("must be 1-64 letters, digits, '_', '.' or '-'")
        return v


class CamerasFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cameras: list[Camera] = Field(min_length=1)


def load_cameras(path: str | os.PathLike[str]) -> list[Camera]:
    """The cameras of a YAML file (see the module docstring); CameraError says what is wrong and where."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise CameraError(f"{p}: cannot read the cameras file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise CameraError(f"{p}: not valid YAML ({exc})") from None
    if isinstance(data, list):
        data = {"cameras": data}
    try:
        cams = CamerasFile.model_validate(data).cameras
    except ValidationError as exc:
        raise CameraError(f"{p}: {_words(exc, data)}") from None
    seen: dict[str, str] = {}
    for c in cams:
        if c.name in seen:
            raise CameraError(f"{p}: two cameras are named {c.name!r}; names must be unique")
        if c.uri in seen.values():
            raise CameraError(f"{p}: camera {c.name!r} reads the same uri as another camera")
        seen[c.name] = c.uri
    return cams


def _words(exc: ValidationError, data: object) -> str:
    """The first validation error in words: which camera, which field, what was expected."""
    err = exc.errors()[0]
    loc = list(err["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "cameras" and isinstance(loc[1], int):
        entry = data["cameras"][loc[1]] if isinstance(data, dict) else None  # type: ignore[index]
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"camera {loc[1] + 1}" + (f" ({name!r})" if name else "")
        loc = loc[2:]
    field = ".".join(str(x) for x in loc)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "is missing"
    elif err["type"] == "extra_forbidden":
        msg = "is not a known option (name, uri, fps, transport)"
    parts = [x for x in (where, field) if x]
    return (": ".join(parts) + " " if parts else "") + (msg if parts else f"expected 'cameras: [...]' ({msg})")
