"""Training speed: episodes per second of one optimiser step, per recipe, on this machine.

For each recipe it builds the model exactly as `sgone train` does (backbone frozen as the
recipe says, the recipe's optimiser and parameter groups), draws real training episodes from
the synthetic data set (images `--image-size` px, cropped to the recipe's training size), and
times, after `--warmup` untimed steps, `--steps` full steps (forward, loss, backward,
optimiser step). Batches are loaded before the clock starts, so "step" is the model's cost;
"data" is the separate cost of drawing and augmenting one episode (it overlaps the step once
`--workers` > 0). The table shows medians.

    python benchmarks/train_speed.py                        # modern (batch 8) and published (batch 1)
    python benchmarks/train_speed.py --backbone vgg16 --size 321 --steps 5
    python benchmarks/train_speed.py --threads 1 --size 128 --image-size 128 --train-episodes 1200
        # also train both recipes on 1200 episodes each and score them (the recipe comparison)

A 2048^3 fp32 matmul rate is printed first: far below ~200 GFLOP/s (REFERENCE.md, section 5)
means the machine was busy and every figure is inflated.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from machine import matmul_gflops


def measure(recipe: str, args: argparse.Namespace) -> dict:
    from sgone.data.episode import collate
    from sgone.data.sampler import TrainEpisodes
    from sgone.data.synthetic import SyntheticSource
    from sgone.data.transforms import TrainTransform
    from sgone.engine.optimisation import build_optimizer, freeze_backbone, segmentation_loss, set_train_mode
    from sgone.engine.recipes import TrainConfig
    from sgone.models.registry import build_model

    overrides = {"batch_size": args.batch_size} if args.batch_size and recipe == "modern" else {}
    cfg = TrainConfig(recipe=recipe, backbone=args.backbone, size=args.size if args.size else -1,
                      steps=args.steps, **overrides).resolved()
    weights = "auto"
    try:
        model = build_model("sgone", args.backbone, variant="fixed", weights=weights)
    except Exception:  # no ImageNet file here: the cost does not depend on the weights
        weights = None
        model = build_model("sgone", args.backbone, variant="fixed", weights=None)
    device = torch.device(args.device)
    freeze_backbone(model, cfg.freeze)
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    source = SyntheticSource(image_size=args.image_size)
    episodes = TrainEpisodes(source, 0, shots=args.shots, seed=0, transform=TrainTransform(cfg.size))
    data_times, batches = [], []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        items = [episodes[step * cfg.batch_size + j] for j in range(cfg.batch_size)]
        data_times.append((time.perf_counter() - start) / cfg.batch_size)
        batches.append(collate(items))
    step_times = []
    for i, batch in enumerate(batches):
        set_train_mode(model, cfg.freeze)
        start = time.perf_counter()
        out = model(batch["support_images"][:, 0].to(device), batch["support_masks"][:, 0].to(device),
                    batch["query_image"].to(device))
        loss = segmentation_loss(out["logits"], batch["query_mask"].to(device), "fixed")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            step_times.append(time.perf_counter() - start)
    step = statistics.median(step_times)
    data = statistics.median(data_times)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"recipe": recipe, "backbone": args.backbone, "weights": "ImageNet" if weights else "random",
            "batch": cfg.batch_size, "size": cfg.size or f"orig {args.image_size}", "freeze": cfg.freeze,
            "trainable": trainable, "step_s": step, "data_ms": 1000 * data,
            "eps_step": cfg.batch_size / step, "eps_total": cfg.batch_size / (step + cfg.batch_size * data)}


def compare(args: argparse.Namespace) -> list[dict]:
    """Train each recipe on the same number of episodes, then score seen (val) and unseen (test) classes."""
    import tempfile
    from pathlib import Path

    from sgone.data.synthetic import SyntheticSource
    from sgone.engine.episode_eval import evaluate
    from sgone.engine.recipes import TrainConfig
    from sgone.engine.trainer import train
    from sgone.models.registry import build_model

    rows = []
    source = SyntheticSource(image_size=args.image_size)
    for recipe in args.recipes:
        batch = TrainConfig(recipe=recipe).resolved().batch_size
        if recipe == "modern" and args.batch_size:
            batch = args.batch_size
        steps = max(1, args.train_episodes // batch)
        out = Path(tempfile.mkdtemp(prefix=f"sgone-{recipe}-"))
        torch.manual_seed(0)
        model = build_model("sgone", args.backbone, variant="fixed", weights="auto")
        start = time.perf_counter()
        result = train({"recipe": recipe, "backbone": args.backbone, "steps": steps, "batch_size": batch,
                        "size": args.size or args.image_size, "out": str(out), "val_every": steps,
                        "val_episodes": args.eval_episodes, "ckpt_every": steps, "device": args.device,
                        "progress": False, "fold": 0, "seed": 0}, model=model, source=source)
        seconds = time.perf_counter() - start
        test = evaluate(model, source, 0, shots=1, episodes=args.eval_episodes, size=args.size or args.image_size,
                        device=args.device, progress=False)
        losses = [loss for _, loss in result["losses"]]
        tail = max(1, len(losses) // 10)
        rows.append({"recipe": recipe, "batch": batch, "steps": steps, "episodes": steps * batch,
                     "minutes": seconds / 60, "loss": sum(losses[-tail:]) / tail,
                     "val": result["val"][-1][1], "test": test["miou"], "test_fb": test["fb_iou"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["modern", "published"], choices=["modern", "published"])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--size", type=int, default=None, help="training crop (default: each recipe's)")
    parser.add_argument("--image-size", type=int, default=320, help="synthetic image side (default 320)")
    parser.add_argument("--batch-size", type=int, default=None, help="modern recipe batch (default 8)")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--train-episodes", type=int, default=0,
                        help="also train each recipe on this many episodes and score it (fold 0 of synthetic)")
    parser.add_argument("--eval-episodes", type=int, default=100, help="validation and test episodes (default 100)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"matmul {matmul_gflops():.0f} GFLOP/s")
    rows = [measure(recipe, args) for recipe in args.recipes]
    header = ("recipe", "backbone", "weights", "batch", "size", "freeze", "trainable", "step s", "data ms/ep",
              "ep/s (step)", "ep/s (with data)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['recipe']} | {r['backbone']} | {r['weights']} | {r['batch']} | {r['size']} | {r['freeze']} | "
              f"{r['trainable'] / 1e6:.2f}M | {r['step_s']:.2f} | {r['data_ms']:.0f} | {r['eps_step']:.2f} | "
              f"{r['eps_total']:.2f} |")
    if args.train_episodes:
        print()
        print(f"equal episodes ({args.train_episodes}), synthetic fold 0 at {args.size or args.image_size} px, "
              f"{args.eval_episodes} episodes each for val (seen classes, val images) and test (unseen classes):")
        print("| recipe | batch | steps | episodes | minutes | final loss | val mIoU | test mIoU | test FB-IoU |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in compare(args):
            print(f"| {r['recipe']} | {r['batch']} | {r['steps']} | {r['episodes']} | {r['minutes']:.1f} | "
                  f"{r['loss']:.3f} | {r['val']:.1f} | {r['test']:.1f} | {r['test_fb']:.1f} |")


if __name__ == "__main__":
    main()
