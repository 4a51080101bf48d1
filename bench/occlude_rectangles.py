"""A second, deliberately different occlusion of Market-1501's queries, to check that a gain measured on
``reidkit datasets make-occluded`` (pasted pieces of real people, objects and background) is not tied to it.

    .venv/bin/python bench/occlude_rectangles.py --out runs/occ_rect [--seed 7]

Each query gets one axis-aligned rectangle over 20-50 % of its area, at a uniform random place and aspect
(0.3-3.3), filled with one of: a solid random colour, uniform noise, or a heavy blur of what it covers (a
smeared, out-of-focus occluder). No content from other images, so nothing person-shaped. The folder holds
``query/`` and a ``samples.csv`` that lists them with Market's own gallery (by path), as make-occluded does.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def occlude(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str, float]:
    w, h = img.size
    for _ in range(100):
        frac = rng.uniform(0.2, 0.5)
        aspect = float(np.exp(rng.uniform(np.log(0.3), np.log(3.3))))
        rh, rw = round((frac * w * h * aspect) ** 0.5), round((frac * w * h / aspect) ** 0.5)
        if rh <= h and rw <= w:
            break
    else:
        rh, rw = h // 2, w
    y, x = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    kind = str(rng.choice(["solid", "noise", "blur"]))
    out = img.copy()
    box = (x, y, x + rw, y + rh)
    if kind == "solid":
        out.paste(tuple(int(c) for c in rng.integers(0, 256, 3)), box)
    elif kind == "noise":
        out.paste(Image.fromarray(rng.integers(0, 256, (rh, rw, 3), dtype=np.uint8)), box)
    else:
        out.paste(img.crop(box).filter(ImageFilter.GaussianBlur(radius=max(rh, rw) / 4)), box)
    return out, kind, rh * rw / (w * h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    from reidkit.datasets import get_dataset

    market = get_dataset("market1501")
    rng = np.random.default_rng(args.seed)
    (args.out / "query").mkdir(parents=True, exist_ok=True)
    rows, kinds, fracs = [], {}, []
    for s in market.query:
        p = Path(s.path)
        img, kind, frac = occlude(Image.open(p).convert("RGB"), rng)
        img.save(args.out / "query" / p.name, quality=95)
        rows.append((f"query/{p.name}", s.pid, s.camid, "query"))
        kinds[kind] = kinds.get(kind, 0) + 1
        fracs.append(frac)
    rows += [(str(Path(s.path).resolve()), s.pid, s.camid, "gallery") for s in market.gallery]
    with open(args.out / "samples.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["path", "pid", "camid", "split"])
        wr.writerows(rows)
    print(f"wrote {args.out}: {len(market.query):,} queries {kinds}, mean cover {100 * np.mean(fracs):.1f} %")


if __name__ == "__main__":
    main()
