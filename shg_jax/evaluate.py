"""Evaluation of a checkpoint: PCK (all / v=2 only / limbs only, per joint) and loss.

    python -m shg_jax.evaluate --workdir DIR [--checkpoint best|latest|best_loss|EPOCH]
        [--split val|test] [--data-dir DIR] [--out FILE.json] [--flip] [--subpixel]
        [--coco-ap] [--person-boxes DETECTIONS.json] [--augment-val]

The same evaluation training runs after every epoch, so on `--split val` it reproduces the
numbers training logged for that epoch. `--coco-ap` adds COCO keypoint AP/AR on the val
split (pycocotools, top-down with the ground-truth boxes; see shg_jax.coco_eval);
`--person-boxes` adds it from a detector's person boxes (the COCO detection-results format,
e.g. HRNet's published val2017 person detections), the protocol of published numbers.
"""

from __future__ import annotations

import json
import pathlib
import sys

from shg_jax import cpu_flags

if __name__ == "__main__":
    cpu_flags.restart_with_hugepage_malloc()    # before the imports below (main.py)

import jax
import numpy as np

from shg_jax import augment, cli, data, fileio
from shg_jax.coco_ap import evaluate_coco_ap, evaluate_person_boxes
from shg_jax.evaluation import evaluate_split, format_table
from shg_jax.runs import checkpoint_label, open_run, workdir_of


@cli.command
def main(argv=None) -> int:
    p = cli.parser("python -m shg_jax.evaluate", __doc__,
                   "python -m shg_jax.evaluate --workdir runs/demo --checkpoint best --split "
                   "val --out runs/demo/val.json")
    cli.add_run_arguments(p, split="val")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size",
                   type=cli.whole_number(1), help="default: the run's eval_batch_size")
    p.add_argument("--out", help="JSON output (default WORKDIR/eval/SPLIT-CHECKPOINT.json)")
    cli.add_decode_arguments(p)
    p.add_argument("--coco-ap", action="store_true",
                   help="also COCO keypoint AP/AR (pycocotools) on the val split, top-down "
                        "with the ground-truth person boxes")
    p.add_argument("--person-boxes", metavar="DETECTIONS.json",
                   help="also COCO keypoint AP/AR on the val split from these person "
                        "detections (COCO detection-results format: image_id, bbox, score, "
                        "category_id), OKS-NMS 0.9, as published top-down numbers are")
    p.add_argument("--augment-val", action="store_true",
                   help="score PCK on a rotated (+-30 deg), scaled (0.75-1.25) and mirrored "
                        "(p 0.5) copy of the split, the same copy for every model "
                        "(shg_jax.augment; what training augmentation buys)")
    args = p.parse_args(argv)
    if args.augment_val and (args.coco_ap or args.person_boxes):
        p.error("--augment-val scores PCK on transformed crops; COCO AP needs the photos "
                "as they are: drop --coco-ap/--person-boxes")
    config, steps, state, record = open_run(args.workdir, args.checkpoint, args.data_dir,
                                            **cli.decode_overrides(args))
    label = checkpoint_label(args.workdir, args.checkpoint, record)
    split = data.Split(config.data_dir, args.split)
    batch_size = args.batch_size or config.eval_batch_size
    coco = evaluate_coco_ap(steps, state, split, batch_size) if args.coco_ap else None
    detected = (evaluate_person_boxes(steps, state, split, batch_size, args.person_boxes)
                if args.person_boxes else None)
    augment_val = augment.augment_config(enabled=True) if args.augment_val else None
    result = evaluate_split(steps, state, split, batch_size, augment_val=augment_val)
    if augment_val is not None:
        result["augment_val"] = augment_val.to_dict()
    if coco:
        result["coco"] = coco
    if detected:
        result["coco_person_boxes"] = dict(detected, detections_file=args.person_boxes)
    result.update(checkpoint=label, epoch=record.epoch, split=args.split,
                  global_step=record.global_step, decode=config.decode.to_dict())
    codec = steps.codec
    print(f"{args.workdir}: checkpoint {label} (epoch {record.epoch}), split {args.split}, "
          f"decoding: flip {codec.flip} (shift {codec.flip_shift:+.3f} cells), subpixel "
          f"{codec.subpixel}"
          + (", on the transformed copy (--augment-val)" if augment_val else ""))
    print(format_table(result))
    for key in ("coco", "coco_person_boxes"):
        if key in result:
            print(f"COCO keypoint AP, top-down with {result[key]['protocol']}")
            print(result[key]["summary"].rstrip())
    out = pathlib.Path(args.out or workdir_of(args.workdir) / "eval" /
                       f"{args.split}-{label}{'-augmented' if augment_val else ''}.json")
    if jax.process_index() == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        fileio.write_json(out, json.loads(json.dumps(result, default=_jsonable)))
        print(f"wrote {out}")
    return 0


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


if __name__ == "__main__":
    sys.exit(main())
