"""``ssl-bench check PLUGIN``: a plugin author's contract test, a few steps on built-in data on the CPU.

A method trains every one of its stages in turn (each starting from the previous one, as in a run) for
``steps`` steps each, with every loss read: a loss that turns non-finite after a few steps, or a later stage
that breaks, fails the check. Every random number is seeded: the losses and scores it prints are the same on
every call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ssl_bench.budget import BUILT_IN, SCALES
from ssl_bench.data.phantoms import make_cxr, make_fundus
from ssl_bench.errors import PluginError
from ssl_bench.method import Method, Stage
from ssl_bench.models import VGG16_BN_TINY, create_encoder, encoder_kind
from ssl_bench.plugins import Registry
from ssl_bench.pools import PreparedPool
from ssl_bench.pretraining import Trainer
from ssl_bench.protocol import Context, Outcome, Protocol
from ssl_bench.task import ClassificationData, ClassificationSplit, SegmentationData, SegmentationSplit, Task

CHECK_SIZE = 32
#: The encoders a method is exercised on: the shared CNN on both channel counts, a timm CNN and a timm ViT.
CHECK_ENCODERS = ((VGG16_BN_TINY, 3), (VGG16_BN_TINY, 1), ("resnet18", 1), ("vit_tiny_patch16_224", 1))
#: Steps per stage unless told otherwise: enough to catch a loss that diverges soon, seconds per method.
CHECK_STEPS = 10
#: Settings fields shrunk for the check wherever a protocol's settings have them.
_TINY_SETTINGS = {"image_size": CHECK_SIZE, "epochs": 1, "batch_size": 4, "max_train_images": None}


@dataclass(frozen=True)
class CheckItem:
    name: str
    status: str  # "pass", "fail", "skip" (not applicable) or "untested" (could not be tested: counts as failed)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "skip")


def _run(name: str, probe: Callable[[], str | None]) -> CheckItem:
    try:
        return CheckItem(name, "pass", probe() or "")
    except Exception as error:  # the point is to report any failure of plugin code, whatever it is
        return CheckItem(name, "fail", f"{type(error).__name__}: {error}")


def _phantom_pool(channels: int) -> PreparedPool:
    images = (make_fundus if channels == 3 else make_cxr)(8, 2 * CHECK_SIZE, seed=0).images
    return PreparedPool(f"check-{channels}", "check", images, np.arange(8), np.arange(0))


def _seeded_encoder(channels: int, name: str = VGG16_BN_TINY) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_encoder(name, in_chans=channels)


def _steps(method: Method, stages: list[Stage], channels: int, steps: int, encoder_name: str) -> str:
    encoder = _seeded_encoder(channels, encoder_name)
    pool = _phantom_pool(channels)
    extras = method.pool_extras(pool.images)
    trainer = Trainer(method, encoder, pool, torch.device("cpu"), seed=0, extras=extras)
    model, reports = None, []
    for index, stage in enumerate(stages):
        model, optimizer, _ = trainer.build(index, stage, model)
        model.train()
        before = [p.detach().clone() for p in encoder.parameters()]
        losses = [
            trainer.read_loss(trainer.step(model, optimizer, stage, step, steps), stage, step) for step in range(steps)
        ]
        if all(torch.equal(a, b) for a, b in zip(before, encoder.parameters(), strict=True)):
            raise PluginError(
                f"stage {stage.name}: the encoder's weights did not change: does the loss reach model.encoder?"
            )
        reports.append(f"{stage.name} loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    create_encoder(encoder_name, in_chans=channels).load_state_dict(encoder.state_dict(), strict=True)
    return ", ".join(reports)


def _check_method(cls: type[Method], steps: int) -> list[CheckItem]:
    prefix = f"method {cls.name}"
    items = [_run(f"{prefix}: instantiates with default options", lambda: repr(cls().options))]
    if not items[0].ok:
        return items
    method = cls()
    stages = method.stages("demo")
    items.append(_run(f"{prefix}: stages() gives a list of Stage per scale", lambda: _stages(method)))
    if not stages:
        return [*items, CheckItem(f"{prefix}: training steps", "skip", "no pretraining stages")]
    tiny = [dataclasses.replace(stage, batch_size=4, image_size=CHECK_SIZE) for stage in stages]
    for encoder_name, channels in CHECK_ENCODERS:
        what = f"{prefix}: {steps} steps of each stage, {encoder_name} on {channels}-channel images"
        if encoder_kind(encoder_name) not in method.encoder_kinds:
            items.append(CheckItem(what, "skip", f"the method declares encoder_kinds {method.encoder_kinds}"))
            continue
        items.append(
            _run(
                f"{what}, encoder updated and exported",
                lambda name=encoder_name, channels=channels: _steps(method, tiny, channels, steps, name),
            )
        )
    return items


def _stages(method: Method) -> str:
    counts = {}
    for scale in SCALES:
        stages = method.stages(scale)
        if not isinstance(stages, list) or not all(isinstance(s, Stage) for s in stages):
            raise PluginError(f"stages({scale!r}) must return a list of ssl_bench.api.Stage")
        counts[scale] = len(stages)
    return ", ".join(f"{scale}: {n} stage(s)" for scale, n in counts.items())


class _CheckTask(Task):
    """A tiny phantom task of one kind, for checking protocols."""

    description = "ssl-bench check's phantom task"
    modality = "check"
    target = "phantom structures"

    channels = 1
    flips = False
    rotation_degrees = 30.0

    def __init__(self, kind: str) -> None:
        self.name, self.kind = f"check-{kind}", kind

    def load(self, data_root=None) -> SegmentationData | ClassificationData:
        phantoms = make_cxr(12, CHECK_SIZE, seed=0)
        images, masks = torch.from_numpy(phantoms.images), torch.from_numpy(phantoms.masks["lung"])
        ids = tuple(f"phantom-{i}" for i in range(12))
        if self.kind == "segmentation":
            train, test = (SegmentationSplit(images[r], masks[r], ids[r]) for r in (slice(8), slice(8, 12)))
            return SegmentationData(train, test)
        # A label that the image shows: whether the lungs cover more than the median area.
        area = masks.flatten(1).float().mean(1)
        labels = (area > area.median()).long().unsqueeze(1)
        splits = (slice(6), slice(6, 9), slice(9, 12))
        return ClassificationData(*(ClassificationSplit(images[r], labels[r], ids[r]) for r in splits))


def _tiny(settings: object) -> object:
    fields = {f.name for f in dataclasses.fields(settings)}
    return dataclasses.replace(settings, **{k: v for k, v in _TINY_SETTINGS.items() if k in fields})


def _run_protocol(registry: Registry, protocol: Protocol, task: Task, data) -> Outcome:
    """One seeded tiny run of ``protocol`` on ``task``, after the protocol it continues from (if any)."""
    upstream = protocol.continues_from(task, pretrained=True)
    start = _run_protocol(registry, registry.protocol(upstream)(), task, data).state if upstream else None
    context = Context(
        encoder=_seeded_encoder(task.channels),
        data=data,
        task=task,
        settings=_tiny(protocol.settings(BUILT_IN["demo"], task)),
        label_fraction=1.0,
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
        pretrained=True,
        start=start,
        # Only the code is checked: the task's own training masks stand in for its shape source's.
        shapes=data.train.masks if protocol.uses_shapes else None,
    )
    return protocol.run(context)


def _summary(protocol: Protocol, task: Task, outcome: Outcome) -> str:
    expected = [metric.name for metric in protocol.metrics(task)]
    if missing := sorted(set(expected) - set(outcome.scores)):
        raise PluginError(f"run() did not report {', '.join(missing)} (metrics() declares {', '.join(expected)})")
    values = []
    for name in expected:
        scores = outcome.scores[name]
        values.append(f"{name} {scores.value if scores.value is not None else np.mean(scores.per_image):.3f}")
    return ", ".join(values)


def _check_protocol(registry: Registry, cls: type[Protocol]) -> list[CheckItem]:
    prefix = f"protocol {cls.name}"
    items = [_run(f"{prefix}: instantiates", lambda: ", ".join(cls.task_kinds))]
    if not items[0].ok:
        return items
    protocol = cls()
    for kind in protocol.task_kinds:
        if kind not in ("segmentation", "classification"):
            items.append(CheckItem(f"{prefix}: on a {kind} task", "untested", "no built-in task of that kind"))
            continue
        task = _CheckTask(kind)
        data = task.load()
        items.append(
            _run(
                f"{prefix}: a tiny run on a {kind} phantom task",
                lambda task=task, data=data: _summary(protocol, task, _run_protocol(registry, protocol, task, data)),
            )
        )
    return items


def _check_task(registry: Registry, task: Task, data_root) -> list[CheckItem]:
    prefix = f"task {task.name}"
    items = [_run(f"{prefix}: metadata", lambda: _metadata(task))]
    availability = task.availability(data_root)
    if not availability.ok:
        detail = f"nothing was tested: its data was not found ({availability.reason}); pass --data-root"
        return [*items, CheckItem(f"{prefix}: load and protocols", "untested", detail)]
    loaded: list[SegmentationData | ClassificationData] = []

    def load() -> str:
        data = task.load(data_root)
        expected = ClassificationData if task.kind == "classification" else SegmentationData
        if not isinstance(data, expected) or data.train.images.shape[1] != task.channels:
            raise PluginError(f"load() must return {expected.__name__} with {task.channels}-channel images")
        loaded.append(data)
        return f"{len(data.train)} train, {len(data.test)} test images"

    items.append(_run(f"{prefix}: load", load))
    if not loaded:
        return items
    small = _small(loaded[0])
    for name, cls in registry.protocols.items():
        protocol = cls()
        if protocol.serves(task):
            items.append(
                _run(
                    f"{prefix}: a tiny {name} run",
                    lambda protocol=protocol: _summary(protocol, task, _run_protocol(registry, protocol, task, small)),
                )
            )
    return items


def _small(data: SegmentationData | ClassificationData) -> SegmentationData | ClassificationData:
    if isinstance(data, ClassificationData):
        return ClassificationData(*(split.subset(slice(0, 16)) for split in (data.train, data.val, data.test)))
    return SegmentationData(data.train.subset(slice(0, 6)), data.test.subset(slice(0, 2)))


def _metadata(task: Task) -> str:
    if task.channels not in (1, 3):
        raise PluginError(f"channels must be 1 or 3, got {task.channels}")
    return f"modality {task.modality}, {task.channels} channels, target {task.target}"


def check_plugin(registry: Registry, plugin: str, data_root=None, steps: int | None = None) -> list[CheckItem]:
    """Exercise every method and task that ``plugin`` registered (``steps`` per method stage, default
    :data:`CHECK_STEPS`); one item per contract clause."""
    steps = steps or CHECK_STEPS
    info = next((p for p in registry.plugins if p.name == plugin), None)
    if info is None:
        names = ", ".join(p.name for p in registry.plugins)
        raise PluginError(f"no plugin named {plugin!r}; installed: {names}. See `ssl-bench plugins`.")
    registered = ", ".join(name for names in info.registered.values() for name in names) or "nothing"
    items = [
        CheckItem(
            f"plugin {plugin}: loads and registers",
            "fail" if info.error else "pass",
            info.error or registered,
        )
    ]
    for name in info.registered["methods"]:
        items += _check_method(registry.methods[name], steps)
    for name in info.registered["tasks"]:
        items += _check_task(registry, registry.tasks[name], data_root)
    for name in info.registered["protocols"]:
        items += _check_protocol(registry, registry.protocols[name])
    for name in info.registered["pools"]:
        pool = registry.pools[name]
        items.append(_run(f"pool {name}: images", lambda pool=pool: _check_pool(pool, data_root)))
    return items


def _check_pool(pool, data_root) -> str:
    images = pool.images(data_root)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != pool.channels:
        raise PluginError(f"expected uint8 (N, {pool.channels}, H, W), got {images.dtype} {tuple(images.shape)}")
    return f"{len(images)} images of {tuple(images.shape[1:])}"
