"""``python -m resnet_viz cam RUN IMAGE --method M --block B``: one image's CAM map (the
grad-cam family, or Captum's Grad-CAM) and the model's top classes, as one JSON object.

``RUN`` is a run id, an exported model file (a CIFAR net, the image resized to 32 px), or
the name of a torchvision ImageNet ResNet (resnet18/34/50: the image centre-cropped to
224 px; random weights unless ``--pretrained``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

CAM_METHODS = ("gradcam", "gradcam_plusplus", "scorecam", "layercam", "eigencam", "hirescam")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cam", help="a CAM map (Grad-CAM++, Score-CAM, Layer-CAM, Eigen-CAM, HiResCAM, Grad-CAM) "
                                   "of one image at a block, with the top classes")
    p.add_argument("run", metavar="RUN", help="a run id, an exported model file, or resnet18/resnet34/resnet50")
    p.add_argument("image", metavar="IMAGE", help="an image file (PNG, JPEG, WebP, GIF or BMP)")
    p.add_argument("--method", choices=CAM_METHODS, default="gradcam_plusplus")
    p.add_argument("--block", default=None, help="a block name (stage3.block2, layer4.1, ...) or stem; "
                   "default: the last block")
    p.add_argument("--target", type=int, default=None, help="class index (default: the predicted class)")
    p.add_argument("--pretrained", action="store_true", help="ImageNet nets: torchvision's weights (downloaded)")
    p.add_argument("--out", default=None, help="runs folder (default ./runs or env RESNET_VIZ_RUNS)")


def _model_and_input(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.Tensor, list[str], str]:
    from resnet_viz.data.uploads import open_upload, to_input_tensor
    from resnet_viz.nets import imagenet

    img = open_upload(Path(args.image).read_bytes())
    if args.run in imagenet.IMAGENET_MODELS:
        model = imagenet.build_imagenet(args.run, args.pretrained).eval()
        weights = "ImageNet" if args.pretrained else "random"
        return model, imagenet.imagenet_input(img), imagenet.imagenet_categories(), \
            f"{imagenet.imagenet_label(args.run)} ({weights} weights)"
    from resnet_viz.cli.experiments import load_model_ref
    from resnet_viz.data.batches import normalize
    from resnet_viz.data.sources import CIFAR10_CLASSES

    model, cfg, label = load_model_ref(args.run, args.out)
    n = cfg.model.num_classes
    classes = list(CIFAR10_CLASSES) if n == len(CIFAR10_CLASSES) else [f"class {i}" for i in range(n)]
    return model, normalize(to_input_tensor(img)[None], channels_last=False), classes, label


def map_stats(amap: torch.Tensor) -> dict[str, Any]:
    """Where a (H, W) map in [0, 1] is: its peak, its mean, and the share of its mass in its top 10% pixels."""
    flat = amap.flatten().double()
    peak = int(flat.argmax())
    total = float(flat.sum())
    top = float(flat.topk(max(1, flat.numel() // 10)).values.sum())
    return {"shape": list(amap.shape), "mean": round(float(flat.mean()), 4), "peak": [peak // amap.shape[1],
            peak % amap.shape[1]], "top10_share": round(top / total, 4) if total > 0 else None}


def cmd_cam(args: argparse.Namespace) -> int:
    from resnet_viz.background.progress import StderrProgress
    from resnet_viz.experiments.attribution import attribute, normalize_map, predict, top_k
    from resnet_viz.experiments.attribution.cams import CAMS, explain_cam
    from resnet_viz.nets.cifar import block_names

    t0 = time.perf_counter()
    model, x, classes, label = _model_and_input(args)
    if args.method in CAMS:
        probs, amap = explain_cam(model, x, args.method, args.block, args.target, progress=StderrProgress())
    else:  # Captum's Grad-CAM, scaled for display the same way
        probs, amap = predict(model, x)[0], normalize_map(attribute(model, x, args.method, args.target,
                                                                    block=args.block))
    target = args.target if args.target is not None else int(probs.argmax())
    result = {
        "experiment": "cam", "model": label, "method": args.method, "block": args.block or block_names(model)[-1],
        "target": target, "target_class": classes[target], "target_probability": round(float(probs[target]), 4),
        "top5": [{"class": c, "probability": round(p, 4)} for c, p in top_k(probs, classes, k=5)],
        "map": map_stats(amap), "seconds": round(time.perf_counter() - t0, 2),
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0
