"""The search match rule's parts on people the model never saw: Market-1501's test split.

With the thresholds of a model's calibration file (chosen on its calibration identities, never on the test
split), each rule's precision, recall and F1 over the test split's cross-camera query x gallery pairs (junk
excluded, distractors as negatives; z and r against 1000 random gallery images, as in `reidkit calibrate`):
cosine alone, z alone, r alone, cosine and z (the rule before r), and cosine and (z or r), the rule now.
Then the z threshold for galleries of a given size (``z_by_gallery``) against the test split's own max-F1
z at that size. Search counts r only where (1 - median) / spread reaches the z threshold; like the
calibration, this script counts it everywhere (on Market-1501's test split the two agree: BENCHMARKS.md).

    .venv/bin/python bench/match_rule.py [--weights FILE] [--no-write]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import command_line, machine, write_section

from reidkit.extract import extract_features
from reidkit.search.query import calibrate as cal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None, help="A model file (default: the shipped default model).")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    fs, info, _ = extract_features(None, args.weights, "market1501")
    found = cal.thresholds_for(info)
    if not found.source.startswith("calibrated"):
        raise SystemExit(f"{info.source}: no calibration file ({found.source})")
    record, where = cal.find_calibration(info)
    assert record is not None
    t, tz, tr = found.threshold, found.z_threshold, found.r_threshold
    query = cal.Labelled(fs.qf, fs.q_pids, fs.q_camids)
    gallery = cal.Labelled(fs.gf, fs.g_pids, fs.g_camids)
    rules = {
        f"cosine >= {t:.4f}": lambda s, z, r: s >= t,
        f"z >= {tz:.3f}": lambda s, z, r: z >= tz,
        "cosine and z (the rule without r)": lambda s, z, r: cal.matches(s, z, r, t, tz, None),
    }
    if tr is not None:
        rules[f"r >= {tr:.4f}"] = lambda s, z, r: r >= tr
        rules["cosine and (z or r) (the rule)"] = lambda s, z, r: cal.matches(s, z, r, t, tz, tr)
    counts = {name: [0, 0] for name in rules}
    n_pos = 0
    for sims, z, r, pos, neg in cal._cross_pairs(query, gallery, cal.REFERENCE, 0):
        n_pos += int(pos.sum())
        for name, rule in rules.items():
            hit = rule(sims, z, r)
            counts[name][0] += int((hit & pos).sum())
            counts[name][1] += int((hit & neg).sum())
    lines = ["| rule (thresholds from the calibration file) | precision | recall | F1 |", "|---|---:|---:|---:|"]
    for name, (tp, fp) in counts.items():
        p, rec = tp / max(tp + fp, 1), tp / max(n_pos, 1)
        lines.append(f"| {name} | {p:.3f} | {rec:.3f} | {2 * p * rec / max(p + rec, 1e-12):.3f} |")
    table = "\n".join(lines)
    sizes = list(zip(record.get("z_by_gallery", {}).get("sizes", []), record.get("z_by_gallery", {}).get("z", []),
                     strict=True))  # fmt: skip
    check = cal.check_features(query, gallery, t, tz, sizes=sizes, r_threshold=tr) if sizes else {}
    size_lines = []
    if check.get("z_by_gallery"):
        own = check["z_by_gallery"]
        size_lines = ["| gallery size (detections) | calibrated z | test's own max-F1 z | test F1 at calibrated z |",
                      "|---:|---:|---:|---:|"]  # fmt: skip
        for (n, zc), zo, f1c in zip(sizes, own["z"], own["f1_at_calibrated"], strict=True):
            size_lines.append(f"| {n} | {zc:.2f} | {zo:.2f} | {f1c:.3f} |")
    sizes_table = "\n".join(size_lines)
    seconds = time.perf_counter() - t0
    print(table, "\n", sizes_table, sep="\n")
    if args.no_write:
        return
    write_section(
        "match_rule_parts",
        f"""## The match rule's parts on unseen people (issues 22 and 23)
Model `{Path(info.source).name}`, thresholds from `{Path(where).name}` (split: {record.get("split")}).
Market-1501 test split, cross-camera query x gallery pairs, junk excluded, distractors as negatives;
z and r against 1000 random gallery images. {machine()}; {seconds:.0f} s.

{table}

z threshold by gallery size (`z_by_gallery`, max F1 with the negatives counted at that size) against the
test split's own max-F1 z at that size, and the test F1 of the z test (negatives counted at that size) at
the calibrated z:

{sizes_table}

Command: `{command_line()}`""",
    )


if __name__ == "__main__":
    main()
