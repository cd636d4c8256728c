"""`nas train`: train a found arch from scratch (nas.training.retrain.train_arch), alone or under torchrun.

    nas train runs/p1/best.json --dataset digits -o resolution=32 -o width_mult=0.35 --out runs/t
    nas train --space mbconv --arch single-path-nas -o resolution=32 --epochs 5 --out runs/t
    torchrun --nproc_per_node=2 $(which nas) train runs/p1/best.json --out runs/t2
    nas train runs/p1/best.json --runner ray --workers 2 --out runs/t3
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

from nas.cli.args import space_options


def _interrupted_note(args: argparse.Namespace) -> str:
    """What an interrupted `nas train` kept: the last finished epoch's checkpoint, or nothing."""
    rank = os.environ.get("RANK", "0")
    if rank != "0":
        return f"rank {rank} stopped; rank 0 keeps the checkpoint"
    if not args.out:
        return "nothing was saved (no --out)"
    ck = os.path.join(args.out, "checkpoint.pt")
    if not os.path.exists(ck):
        return f"no epoch had finished, nothing was saved in {args.out}"
    again = "run the same command again" if args.resume else "run the same command with --resume"
    return f"the last finished epoch is in {ck} - {again} to continue"


def cmd_train(args: argparse.Namespace) -> int:
    from nas.api import train
    from nas.cli.args import Terminated
    given = {k: getattr(args, k) for k in ("dataset", "epochs", "batch_size", "lr", "weight_decay",
                                            "label_smoothing", "warmup_epochs", "augment", "seed")
             if getattr(args, k) is not None}
    kwargs = dict(space=args.space, arch=args.arch, space_options=space_options(args.space_option), out=args.out,
                  resume=args.resume, progress=not args.quiet, torch_threads=args.torch_threads, device=args.device,
                  amp=args.amp, **given)
    if args.export_int8 and not args.out:
        from nas.core.errors import UsageError
        raise UsageError("--export-int8 needs --out (the folder of model.pt and model.int8.onnx)")
    try:
        if args.runner == "ray":   # the same DDP job on Ray actors (nas/cluster/ray_train.py)
            from nas.cluster.ray_train import train_on_ray
            result = train_on_ray(args.workers, args.address, result=args.result, **kwargs)
        else:
            result = train(args.result, **kwargs)
    except (KeyboardInterrupt, Terminated):   # SIGINT or SIGTERM: main prints this note (there are no trials)
        args.interrupted = _interrupted_note(args)
        raise
    if result is None:   # a torchrun rank other than 0: rank 0 prints
        return 0
    diff = "".join(f"\n  trained at {k}={t} (searched {s})" for k, (s, t) in result.differs.items())
    onnx = ", ".join(f"batch {b}: {d:.1e}" for b, d in result.onnx_max_abs_diff.items())
    text = (f"trained {result.arch}\n  {result.epochs} epochs on {result.config.dataset} in "
            f"{result.seconds:.1f} s ({result.world_size} process{'es' if result.world_size > 1 else ''}), "
            f"{result.params_m:.3f} M params\n  held-out accuracy {result.accuracy:.4f} (loss {result.val_loss:.4f}){diff}")
    for c in result.schedule_changes:   # --resume with another --epochs: say the schedule is not one run's
        text += (f"\n  schedule changed after epoch {c['after_epoch']}: from {c['epochs_from']} to {c['epochs_to']} "
                 f"epochs (the cosine decay re-stretched; not the same as one {c['epochs_to']}-epoch run)")
    if result.init_tensors is not None:
        text += f"\n  started from {args.result}: {result.init_tensors[0]} of {result.init_tensors[1]} tensors"
    if result.files:
        text += (f"\n  wrote {', '.join(result.files.values())}"
                 f"\n  max |onnx - torch|: {onnx}")
    data = result.to_dict()
    if args.export_int8:   # the int8 file of the trained weights, and its accuracy cost
        from nas.api import export_int8
        from nas.cli.args import int8_text
        data["int8"] = export_int8(result.files["torch"], os.path.join(args.out, "model.int8.onnx"),
                                   result.config.dataset, result.config.seed)
        text += "\n  " + int8_text(data["int8"]).replace("\n", "\n  ")
    print(json.dumps(data, indent=1, default=str) if args.json else text)
    return 0


def add_train_parser(sub: Any) -> None:
    """Register `nas train` on the CLI's subparsers."""
    s = sub.add_parser("train", help="train a found arch from scratch; export .pt and ONNX (torchrun for DDP)")
    s.add_argument("result", nargs="?", help="best.json written by 'nas search' (or give --space and --arch), or a "
                                             ".pt of 'nas train' / 'nas export' / a supernet's subnet.pt to fine-tune")
    s.add_argument("--space", help="search space (with --arch; see 'nas list spaces')")
    s.add_argument("-o", "--space-option", action="append", metavar="KEY=VALUE",
                   help="space option to train at, repeatable; with a result file it overrides the searched "
                        "value (e.g. -o resolution=32 -o width_mult=0.35 on a CPU); the result says so")
    s.add_argument("--arch", help="block string, preset name or arch JSON (with --space)")
    s.add_argument("--dataset", metavar="SPEC", help="digits (default, embedded), synthetic, cifar10:PATH or "
                                                     "imagefolder:PATH; accuracy is measured on its held-out split")
    s.add_argument("--epochs", type=int, help="epochs (default 30)")
    s.add_argument("--batch-size", type=int, help="global batch size, split over torchrun processes (default 64)")
    s.add_argument("--lr", type=float, help="peak learning rate of SGD (default 0.05)")
    s.add_argument("--weight-decay", type=float, help="on weights, not norms or biases (default 5e-4)")
    s.add_argument("--label-smoothing", type=float, help="default 0.1")
    s.add_argument("--warmup-epochs", type=float, help="linear warm-up before the cosine decay (default 1)")
    s.add_argument("--augment", choices=["auto", "none", "crop", "crop-flip"],
                   help="auto (default): crop+flip for cifar10/imagefolder, crop for digits, none for synthetic")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N (torchrun: each rank its GPU)")
    s.add_argument("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    s.add_argument("--seed", type=int, help="seed of weights, shuffling and augmentation (default 0)")
    s.add_argument("--torch-threads", type=int, metavar="N", help="torch CPU threads per process")
    s.add_argument("--runner", choices=["local", "ray"], default="local",
                   help="local (default; under torchrun: DDP) or ray: the same DDP job on --workers Ray actors")
    s.add_argument("--workers", type=int, default=2, help="with --runner ray: processes (default 2)")
    s.add_argument("--address", help="with --runner ray: a running Ray cluster (HOST:PORT); default an embedded one")
    s.add_argument("--out", help="folder for checkpoint.pt (each epoch), model.pt, model.onnx and result.json")
    s.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    s.add_argument("--export-int8", action="store_true",
                   help="also write model.int8.onnx (static QDQ int8, calibrated on training images) and report "
                        "the held-out accuracy before and after quantization")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(func=cmd_train)
