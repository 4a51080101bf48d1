"""Carry a calibration's thresholds over to a sibling model file, with the new model's own test-split figures.

For a model trained on every training identity (none left unseen to calibrate the match rule on): the
thresholds of a model of the same recipe calibrated on its held-out identities (`reidkit calibrate --holdout`),
re-checked with the new model on Market-1501's test split (people neither model saw; the same check
`reidkit calibrate` makes). The record says where its thresholds came from (``carried_from``).

    .venv/bin/python scripts/carry_calibration.py FROM.json --weights NEW.pth [--out FILE] [--source-model TEXT]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from reidkit import __version__
from reidkit.extract import extract_features
from reidkit.search.query import calibrate as cal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="The calibration file whose thresholds are carried over.")
    ap.add_argument("--weights", type=Path, required=True, help="The model file that gets them.")
    ap.add_argument("--out", type=Path, default=None, help="Default: calibration_<weights stem>.json beside it.")
    ap.add_argument("--source-model", default=None, help="What the source was calibrated for (default: its weights).")
    args = ap.parse_args()
    old = cal.load_calibration(args.source)
    if not str(old.get("split", "")).startswith("train, the"):
        raise SystemExit(f"{args.source}: split {old.get('split')!r} is not held-out ids; nothing honest to carry")
    t0 = time.perf_counter()
    fs, info, _ = extract_features(None, args.weights, "market1501")
    if info.feat_dim != old.get("feat_dim"):
        raise SystemExit(f"{args.weights}: {info.feat_dim}-d embeddings, {args.source} is for {old.get('feat_dim')}-d")
    table = old.get("z_by_gallery") or {}
    check = cal.check_features(
        cal.Labelled(fs.qf, fs.q_pids, fs.q_camids), cal.Labelled(fs.gf, fs.g_pids, fs.g_camids),
        old["threshold"], old["z_threshold"], sizes=list(zip(table.get("sizes", []), table.get("z", []), strict=True)),
        r_threshold=old.get("r_threshold"),
    )  # fmt: skip
    carried = {k: old.get(k) for k in ("weights", "split", "n_ids", "n_images", "created", "train")}
    record = {
        **{k: v for k, v in old.items() if k not in ("test", "train", "distributions", "curve", "seconds")},
        "weights": args.weights.name,
        "split": f"carried over from {args.source_model or carried['weights']}, the same recipe; that model's "
        f"calibration split: {carried['split']}",
        "carried_from": carried,
        "test": {"split": "query x gallery (cross-camera, junk excluded), this model", **check},
        "seconds": round(time.perf_counter() - t0, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reidkit": __version__,
    }
    out = args.out or args.weights.parent / cal.calibration_file_name(args.weights)
    cal.save_calibration(out, record)
    for rule in ("cosine", "z", "r", "both"):
        r = check.get(rule)
        if r:
            print(f"test, {rule}: precision {r['precision']:.3f} recall {r['recall']:.3f} F1 {r['f1']:.3f}")
    print(f"test's own max-F1 cosine threshold {check['max_f1_threshold']} (carried {old['threshold']}); wrote {out}")


if __name__ == "__main__":
    main()
