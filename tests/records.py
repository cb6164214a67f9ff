"""Result records for tests of the leaderboard and the report: every field defaulted but what a test sets."""

from __future__ import annotations

import zlib
from pathlib import Path

from ssl_bench.protocol import Selection
from ssl_bench.record import Compute, MetricRecord, PoolRecord, ProtocolRecord, ResultRecord, write_record

DEFAULT_COMPUTE = {
    "device": "cpu",
    "protocol_seconds": 20.0,
    "peak_memory_mb": 800.0,
    "pretrain_seconds": 10.0,
    "pretrain_images_per_second": 50.0,
}
SCRATCH = {"pretrain_seconds": None, "pretrain_images_per_second": None}
NO_RATE = {"pretrain_images_per_second": None}
FUNDUS_POOL = PoolRecord("fundus", "aaaaaaaa" + "1" * 56)


def dice_and_iou(values: list[float]) -> dict[str, MetricRecord]:
    """Segmentation metrics: dice holds ``values`` per image and iou (iou = dice / 2, as a marker) half of them."""
    ids = [f"img{i}" for i in range(len(values))]
    return {
        "dice": MetricRecord(higher_is_better=True, per_image=list(values), ids=ids),
        "iou": MetricRecord(higher_is_better=True, per_image=[v / 2 for v in values], ids=ids),
    }


def record(
    job_id: str,
    variant: str = "simclr",
    task: str = "lung",
    seed_index: int = 0,
    scores: list[float] | None = None,
    *,
    protocol: str = "frozen",
    frozen_encoder: bool | None = None,
    fraction: float = 1.0,
    budget: str = "paper",
    pretrained: bool | None = None,
    pool: PoolRecord | None = FUNDUS_POOL,
    metrics: dict[str, MetricRecord] | None = None,
    headline: str = "dice",
    compute: dict | None = None,
    modality: str = "xray",
    unix_time: float = 1000.0,
    seed: int | None = None,
) -> ResultRecord:
    """A record with defaults for all a test does not set.

    ``scores`` are dice per image (see :func:`dice_and_iou`) unless ``metrics`` is given. ``protocol`` is the label
    (its name is the part before ``(``); the encoder is frozen except under ``finetune``. A variant called
    ``scratch`` is not pretrained and has no pool. ``compute`` overrides entries of ``DEFAULT_COMPUTE``.
    """
    name = protocol.split("(")[0]
    if pretrained is None:
        pretrained = variant != "scratch"
    return ResultRecord(
        job_id=job_id,
        spec={"variant": variant, "task": task},
        method=variant.split("(")[0],
        variant=variant,
        pretrained=pretrained,
        encoder="resnet18",
        pool=pool if pretrained else None,
        task=task,
        task_kind="segmentation",
        task_modality=modality,
        data_fingerprint="d" * 16,
        protocol=ProtocolRecord(
            name=name,
            label=protocol,
            version="1",
            settings={},
            frozen_encoder=name != "finetune" if frozen_encoder is None else frozen_encoder,
        ),
        label_fraction=fraction,
        seed_index=seed_index,
        seed=zlib.crc32(job_id.encode()) if seed is None else seed,
        budget=budget,
        headline_metric=headline,
        metrics=metrics if metrics is not None else dice_and_iou(scores if scores is not None else [0.5]),
        selection=Selection(epoch=3, val_loss=0.25, val_loss_name="dice+bce"),
        compute=Compute(**{**DEFAULT_COMPUTE, **(compute or {})}),
        versions={"ssl_bench": "test"},
        config_hash="c" * 16,
        git_commit=None,
        started="2024-01-01T00:00:00+00:00",
        finished="2024-01-01T00:01:00+00:00",
        unix_time=unix_time,
    )


def write_runs(results_dir: Path, records: list[ResultRecord]) -> None:
    for rec in records:
        write_record(results_dir / "runs" / rec.job_id / "result.json", rec)
