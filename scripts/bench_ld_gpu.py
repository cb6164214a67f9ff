"""Time LD's stage-2 step on whatever device is present and write the figures to a JSON file.

At the published setting (4 samples = 20 network images of 448 px, vgg16_bn_tiny) it reports, per variant
(eager, and under torch.compile unless ``--no-compile``):
- ms/step: compute only (fixed views already on the device), views only, and end to end (uint8 source
  images on the device -> views -> forward -> losses -> backward -> Adam step);
- peak memory of the end-to-end and compute-only steps, the source pool excluded;
- the loss under bf16 autocast against the fp32 loss on the same weights and views (TF32 off).

Usage: python scripts/bench_ld_gpu.py OUT.json [--small] [--no-compile]
``--small`` runs a tiny setting with a few steps, so that the script can be checked on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from ssl_bench_methods.ld import LocalDiscrimination, ld_loss, make_views

from ssl_bench.api.data import make_fundus
from ssl_bench.api.nets import create_encoder

LOSS_TOLERANCE = 1e-2  # relative, bf16 against fp32


@dataclass(frozen=True)
class Setting:
    samples: int
    image_size: int
    pool_images: int
    pool_size: int
    warmup_steps: int
    timed_steps: int


PUBLISHED = Setting(samples=4, image_size=448, pool_images=16, pool_size=512, warmup_steps=5, timed_steps=30)
SMALL = Setting(samples=2, image_size=64, pool_images=8, pool_size=96, warmup_steps=1, timed_steps=3)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(step: Callable[[], object], setting: Setting, device: torch.device) -> float:
    for _ in range(setting.warmup_steps):
        step()
    times = []
    for _ in range(setting.timed_steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 2)


def peak_gb(step: Callable[[], object], device: torch.device, baseline_bytes: int) -> float | None:
    """Peak memory of one step beyond ``baseline_bytes`` (the source pool); None off CUDA."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    return round((torch.cuda.max_memory_allocated(device) - baseline_bytes) / 1e9, 3)


def measure(setting: Setting, device: torch.device, compile_model: bool) -> dict:
    method = LocalDiscrimination()
    stage = dataclasses.replace(
        method.stages("paper")[1], batch_size=2 * setting.samples, image_size=setting.image_size
    )
    torch.manual_seed(0)
    model = method.build_model(create_encoder("vgg16_bn_tiny", 3), stage, 3).to(device)
    optimizer, _ = method.configure_optimizer(model, stage)
    network = torch.compile(model) if compile_model else model
    mixed_precision = device.type == "cuda"

    before_pool = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    pool = torch.from_numpy(make_fundus(setting.pool_images, setting.pool_size, seed=0).images).to(device)
    pool_bytes = torch.cuda.memory_allocated(device) - before_pool if device.type == "cuda" else 0
    generator = torch.Generator().manual_seed(0)

    def views():
        picks = torch.randint(len(pool), (stage.batch_size,), generator=generator).to(device, non_blocking=True)
        return make_views(pool[picks].float().div_(255), stage.image_size, generator)

    def train(step_views) -> None:
        loss = ld_loss(network, step_views, method.options, mixed_precision)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    end_to_end = median_ms(lambda: train(views()), setting, device)
    end_to_end_peak = peak_gb(lambda: train(views()), device, pool_bytes)
    fixed = views()
    figures = {
        "ms_per_step": {
            "compute": median_ms(lambda: train(fixed), setting, device),
            "views": median_ms(views, setting, device),
            "end_to_end": end_to_end,
        },
        "peak_memory_gb": {
            "end_to_end": end_to_end_peak,
            "compute": peak_gb(lambda: train(fixed), device, pool_bytes),
        },
    }
    figures["loss_check"] = loss_check(network, model, fixed, method)
    return figures


def loss_check(network, model, views, method: LocalDiscrimination) -> dict:
    """The trained step's loss (``network``, bf16 autocast, fp32 losses) against an all-fp32 forward of the
    same weights (eager ``model``, TF32 off) on the same views."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            mixed = ld_loss(network, views, method.options, mixed_precision=True).item()
            full = ld_loss(model, views, method.options, mixed_precision=False).item()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    relative = abs(mixed - full) / abs(full)
    return {"bf16": mixed, "fp32": full, "relative_difference": relative, "within_1e-2": relative <= LOSS_TOLERANCE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="JSON file to write")
    parser.add_argument("--small", action="store_true", help="a tiny setting, a few steps (CPU check)")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True, help="also measure under torch.compile"
    )
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    setting = SMALL if args.small else PUBLISHED
    variants = {"eager": False, "compiled": True} if args.compile else {"eager": False}
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "setting": {**dataclasses.asdict(setting), "network_images": 5 * setting.samples},
        "variants": {name: measure(setting, device, compiled) for name, compiled in variants.items()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
