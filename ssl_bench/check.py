"""``ssl-bench check PLUGIN``: a plugin author's contract test, a few steps on built-in data on the CPU."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ssl_bench.classify import ClassificationProtocol, run_classification
from ssl_bench.data.phantoms import make_cxr, make_fundus
from ssl_bench.errors import PluginError
from ssl_bench.method import PROFILES, Method, Stage
from ssl_bench.models import VGG16_BN_TINY, SegmentationModel, create_encoder
from ssl_bench.plugins import Registry
from ssl_bench.pools import PreparedPool
from ssl_bench.pretrain import _Trainer
from ssl_bench.task import ClassificationData, SegmentationData, Task
from ssl_bench.transfer import TransferProtocol, run_transfer

CHECK_SIZE = 32
CHECK_STEPS = 2


@dataclass(frozen=True)
class CheckItem:
    name: str
    status: str  # "pass", "fail" or "skip"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"


def _run(name: str, probe: Callable[[], str | None]) -> CheckItem:
    try:
        return CheckItem(name, "pass", probe() or "")
    except Exception as error:  # the point is to report any failure of plugin code, whatever it is
        return CheckItem(name, "fail", f"{type(error).__name__}: {error}")


def _phantom_pool(channels: int) -> PreparedPool:
    images = (make_fundus if channels == 3 else make_cxr)(8, 2 * CHECK_SIZE, seed=0).images
    return PreparedPool(f"check-{channels}", "check", images, np.arange(8), np.arange(0))


def _steps(method: Method, stage: Stage, channels: int) -> str:
    encoder = create_encoder(VGG16_BN_TINY, in_chans=channels)
    pool = _phantom_pool(channels)
    extras = method.pool_extras(pool.images)
    trainer = _Trainer(method, encoder, pool, torch.device("cpu"), seed=0, extras=extras)
    model, optimizer, _ = trainer.build(0, stage, None)
    model.train()
    before = [p.detach().clone() for p in encoder.parameters()]
    losses = [
        trainer.read_loss(trainer.step(model, optimizer, stage, step, CHECK_STEPS), stage, step)
        for step in range(CHECK_STEPS)
    ]
    if all(torch.equal(a, b) for a, b in zip(before, encoder.parameters(), strict=True)):
        raise PluginError("the encoder's weights did not change: does the loss reach model.encoder?")
    transfer = SegmentationModel(create_encoder(VGG16_BN_TINY, in_chans=channels))
    transfer.encoder.load_state_dict(encoder.state_dict(), strict=True)
    return "losses " + ", ".join(f"{loss:.4f}" for loss in losses)


def _check_method(cls: type[Method]) -> list[CheckItem]:
    prefix = f"method {cls.name}"
    items = [_run(f"{prefix}: instantiates with default options", lambda: repr(cls().options))]
    if not items[0].ok:
        return items
    method = cls()
    stages = method.stages("demo")
    items.append(_run(f"{prefix}: stages() gives a list of Stage per profile", lambda: _stages(method)))
    if not stages:
        return [*items, CheckItem(f"{prefix}: training steps", "skip", "no pretraining stages")]
    tiny = dataclasses.replace(stages[0], batch_size=4, image_size=CHECK_SIZE)
    for channels in (3, 1):
        items.append(
            _run(
                f"{prefix}: {CHECK_STEPS} steps on {channels}-channel images, encoder updated and exported",
                lambda channels=channels: _steps(method, tiny, channels),
            )
        )
    return items


def _stages(method: Method) -> str:
    counts = {}
    for profile in PROFILES:
        stages = method.stages(profile)
        if not isinstance(stages, list) or not all(isinstance(s, Stage) for s in stages):
            raise PluginError(f"stages({profile!r}) must return a list of ssl_bench.api.Stage")
        counts[profile] = len(stages)
    return ", ".join(f"{profile}: {n} stage(s)" for profile, n in counts.items())


def _short_transfer(task: Task, data: SegmentationData | ClassificationData) -> str:
    encoder = create_encoder(VGG16_BN_TINY, in_chans=task.channels)
    generator, cpu = torch.Generator().manual_seed(0), torch.device("cpu")
    if task.kind == "classification":
        small = ClassificationData(*(split.subset(slice(0, 16)) for split in (data.train, data.val, data.test)))
        protocol = ClassificationProtocol(image_size=CHECK_SIZE, frozen_epochs=1, finetune_epochs=1, batch_size=8)
        regimes = run_classification(
            encoder,
            small,
            protocol,
            classes=task.classes,
            multi_label=task.multi_label,
            label_fraction=1.0,
            generator=generator,
            device=cpu,
            progress=False,
        )
        return "test AUC after one epoch each: " + ", ".join(f"{k} {r.auc:.3f}" for k, r in regimes.items())
    small = SegmentationData(data.train.subset(slice(0, 6)), data.test.subset(slice(0, 2)))
    protocol = TransferProtocol(image_size=CHECK_SIZE, frozen_epochs=1, finetune_epochs=1, batch_size=4)
    result = run_transfer(
        encoder,
        small,
        protocol,
        label_fraction=1.0,
        rotation_degrees=task.rotation_degrees,
        generator=generator,
        device=cpu,
        progress=False,
    )
    return "test dice after one epoch each: " + ", ".join(
        f"{k} {np.mean(r.dice):.3f}" for k, r in result.regimes.items()
    )


def _check_task(task: Task, data_root) -> list[CheckItem]:
    prefix = f"task {task.name}"
    items = [_run(f"{prefix}: metadata", lambda: _metadata(task))]
    availability = task.availability(data_root)
    if not availability.ok:
        return [
            *items,
            CheckItem(f"{prefix}: load and transfer", "skip", f"data not found: {availability.reason}"),
        ]
    loaded: list[SegmentationData | ClassificationData] = []

    def load() -> str:
        data = task.load(data_root)
        expected = ClassificationData if task.kind == "classification" else SegmentationData
        if not isinstance(data, expected) or data.train.images.shape[1] != task.channels:
            raise PluginError(f"load() must return {expected.__name__} with {task.channels}-channel images")
        loaded.append(data)
        return f"{len(data.train)} train, {len(data.test)} test images"

    items.append(_run(f"{prefix}: load", load))
    if loaded:
        items.append(_run(f"{prefix}: one frozen and one fine-tune epoch", lambda: _short_transfer(task, loaded[0])))
    return items


def _metadata(task: Task) -> str:
    if task.channels not in (1, 3):
        raise PluginError(f"channels must be 1 or 3, got {task.channels}")
    return f"modality {task.modality}, {task.channels} channels, target {task.target}"


def check_plugin(registry: Registry, plugin: str, data_root=None) -> list[CheckItem]:
    """Exercise every method and task that ``plugin`` registered; one item per contract clause."""
    info = next((p for p in registry.plugins if p.name == plugin), None)
    if info is None:
        names = ", ".join(p.name for p in registry.plugins)
        raise PluginError(f"no plugin named {plugin!r}; installed: {names}. See `ssl-bench plugins`.")
    registered = ", ".join(info.methods + info.tasks + info.pools) or "nothing"
    items = [
        CheckItem(
            f"plugin {plugin}: loads and registers",
            "fail" if info.error else "pass",
            info.error or registered,
        )
    ]
    for name in info.methods:
        items += _check_method(registry.methods[name])
    for name in info.tasks:
        items += _check_task(registry.tasks[name], data_root)
    for name in info.pools:
        pool = registry.pools[name]
        items.append(_run(f"pool {name}: images", lambda pool=pool: _check_pool(pool, data_root)))
    return items


def _check_pool(pool, data_root) -> str:
    images = pool.images(data_root)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != pool.channels:
        raise PluginError(f"expected uint8 (N, {pool.channels}, H, W), got {images.dtype} {tuple(images.shape)}")
    return f"{len(images)} images of {tuple(images.shape[1:])}"
