"""LD's downstream protocol: transfer an encoder to a segmentation task and score it.

Only the encoder is transferred; a fresh U-Net decoder and head are trained in two regimes, both
reported: ``frozen`` (encoder in eval mode, no gradients) and ``finetune`` (from the best frozen
checkpoint, everything trained). Each regime keeps the checkpoint with the best validation soft Dice
loss and is scored on the test split with per-image Dice and IoU at 0.5. Test data never steers
training or model selection.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from time import perf_counter

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ssl_bench.augment import normalize, random_flip_rotate
from ssl_bench.metrics import dice_per_image, iou_per_image, soft_dice_from_sums, soft_dice_loss
from ssl_bench.models import Encoder, SegmentationModel
from ssl_bench.task import SegmentationData, SegmentationSplit

REGIMES = ("frozen", "finetune")
VALIDATION_FRACTION = 0.2
# Inference only: larger than training batches for speed, small enough for 512 px on any device.
_EVAL_BATCH_SIZE = 16
# Resizing happens in chunks so that float copies of a large task never sit in memory at once.
_RESIZE_CHUNK = 64


@dataclass(frozen=True)
class TransferProtocol:
    """The downstream schedule: image size, epochs of each regime, batch size, Adam learning rate."""

    image_size: int
    frozen_epochs: int
    finetune_epochs: int
    batch_size: int
    lr: float = 1e-3

    def __post_init__(self) -> None:
        for field in ("image_size", "frozen_epochs", "finetune_epochs", "batch_size"):
            if getattr(self, field) < 1:
                raise ValueError(f"TransferProtocol.{field} must be at least 1, got {getattr(self, field)}")

    @classmethod
    def for_profile(cls, profile: str) -> TransferProtocol:
        """``paper`` and ``matched``: LD's published protocol. ``demo``: a small, fast run for trying things out."""
        if profile in ("paper", "matched"):
            return cls(image_size=512, frozen_epochs=100, finetune_epochs=100, batch_size=2, lr=1e-3)
        if profile == "demo":
            return cls(image_size=96, frozen_epochs=12, finetune_epochs=12, batch_size=4, lr=1e-3)
        raise ValueError(f"Unknown profile {profile!r}: use 'demo', 'paper' or 'matched'.")


@dataclass(frozen=True)
class RegimeResult:
    """Test scores of one regime's selected checkpoint (per image, in ``ids`` order) and its training.

    ``best_epoch`` counts from 1; ``seconds`` covers training and validation, not the test pass.
    """

    dice: list[float]
    iou: list[float]
    ids: list[str]
    best_epoch: int
    best_val_loss: float
    seconds: float
    train_images_per_second: float

    @property
    def metrics(self) -> dict[str, dict]:
        """The result file's form: per-image scores with their image ids."""
        return {
            "dice": {"per_image": self.dice, "ids": self.ids},
            "iou": {"per_image": self.iou, "ids": self.ids},
        }


@dataclass(frozen=True)
class TransferResult:
    """One :class:`RegimeResult` per regime, keyed ``frozen`` and ``finetune``."""

    regimes: dict[str, RegimeResult]


@dataclass(frozen=True)
class RegimeFit:
    """What :func:`train_regime` selected: the best validation checkpoint and the run's timings."""

    best_state: dict[str, Tensor]
    best_epoch: int
    best_val_loss: float
    seconds: float
    train_images_per_second: float


def split_train_val(n: int, label_fraction: float) -> tuple[range, range]:
    """LD's split of an ordered training list: ``(train, validation)`` rows.

    The labelled prefix is the first ``floor(f n)`` rows; validation is the first ``floor(0.2 len)`` rows
    of that prefix (at least one), training the rest (at least one).
    """
    if not 0 < label_fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}")
    # The epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 from losing a row to rounding.
    prefix = math.floor(label_fraction * n + 1e-9)
    if prefix < 2:
        raise ValueError(
            f"label fraction {label_fraction} of {n} training images keeps {prefix}; at least 2 are needed "
            "(1 for validation, 1 for training): use a larger fraction or more training images."
        )
    val = max(1, math.floor(VALIDATION_FRACTION * prefix + 1e-9))
    return range(val, prefix), range(0, val)


def run_transfer(
    encoder: Encoder,
    data: SegmentationData,
    protocol: TransferProtocol,
    *,
    label_fraction: float,
    rotation_degrees: float,
    generator: torch.Generator,
    device: torch.device,
    progress: bool = True,
) -> TransferResult:
    """Train a fresh decoder on ``encoder`` (a copy: ``encoder`` itself is not modified) in both regimes.

    Every random number (decoder init, shuffles, augmentation) comes from ``generator``.
    """
    train_rows, val_rows = split_train_val(len(data.train), label_fraction)
    size = protocol.image_size
    train = resize_split(data.train.subset(slice(train_rows.start, train_rows.stop)), size, device)
    val = resize_split(data.train.subset(slice(val_rows.start, val_rows.stop)), size, device)
    test = resize_split(data.test, size, device)
    model = build_segmentation_model(encoder, generator).to(device)
    epochs = {"frozen": protocol.frozen_epochs, "finetune": protocol.finetune_epochs}
    regimes = {}
    for regime in REGIMES:
        model.set_encoder_frozen(regime == "frozen")
        fit = train_regime(
            model,
            train,
            val,
            epochs=epochs[regime],
            batch_size=protocol.batch_size,
            lr=protocol.lr,
            rotation_degrees=rotation_degrees,
            generator=generator,
            progress=progress,
            desc=regime,
        )
        model.load_state_dict(fit.best_state)
        regimes[regime] = _score(model, test, fit)
    return TransferResult(regimes)


def build_segmentation_model(encoder: Encoder, generator: torch.Generator) -> SegmentationModel:
    """A :class:`SegmentationModel` on a copy of ``encoder``; the decoder's init is drawn from ``generator``."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    # The layers' default init uses torch's global RNG: seed a forked copy so the caller's RNG is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SegmentationModel(copy.deepcopy(encoder))


def resize_split(split: SegmentationSplit, size: int, device: torch.device) -> SegmentationSplit:
    """``split`` at ``size`` x ``size`` on ``device``: images bilinear (antialiased), masks bilinear then > 0.5.

    Images stay uint8, as a resized image file would be, to keep large tasks small on the device.
    """
    images, masks = [], []
    for start in range(0, len(split), _RESIZE_CHUNK):
        chunk = slice(start, start + _RESIZE_CHUNK)
        image = split.images[chunk].to(device).float()
        mask = split.masks[chunk].to(device).float().unsqueeze(1)
        if image.shape[-2:] != (size, size):
            image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True)
            mask = F.interpolate(mask, size=(size, size), mode="bilinear", antialias=True)
        images.append(image.round().clamp(0, 255).to(torch.uint8))
        masks.append(mask.squeeze(1) > 0.5)
    return SegmentationSplit(torch.cat(images), torch.cat(masks), split.ids)


def train_regime(
    model: SegmentationModel,
    train: SegmentationSplit,
    val: SegmentationSplit,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    rotation_degrees: float,
    generator: torch.Generator,
    progress: bool = False,
    desc: str = "",
) -> RegimeFit:
    """Train ``model``'s trainable parameters with a fresh Adam; keep the best validation checkpoint.

    Ties keep the earlier epoch. ``model`` ends in its last epoch's state; load ``best_state`` to use the best.
    """
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    device = next(model.parameters()).device
    best_state: dict[str, Tensor] = {}
    best_epoch, best_loss, train_seconds = 0, math.inf, 0.0
    start = perf_counter()
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        epoch_start = perf_counter()
        _train_epoch(model, optimizer, train, batch_size, rotation_degrees, generator)
        _synchronize(device)
        train_seconds += perf_counter() - epoch_start
        loss = validation_loss(model, val)
        if loss < best_loss:
            best_epoch, best_loss = epoch, loss
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        bar.set_postfix(val_loss=f"{loss:.4f}", best=f"{best_loss:.4f}@{best_epoch}")
    if not best_state:
        raise RuntimeError(f"{desc or 'training'}: the validation loss was NaN in every epoch; try a lower lr")
    seconds = perf_counter() - start
    return RegimeFit(best_state, best_epoch, best_loss, seconds, epochs * len(train) / max(train_seconds, 1e-9))


def _train_epoch(
    model: SegmentationModel,
    optimizer: torch.optim.Optimizer,
    train: SegmentationSplit,
    batch_size: int,
    rotation_degrees: float,
    generator: torch.Generator,
) -> None:
    model.train()
    order = torch.randperm(len(train), generator=generator).to(train.images.device)
    for batch in order.split(batch_size):
        images = train.images[batch].float() / 255
        masks = train.masks[batch].unsqueeze(1).float()
        images, masks = random_flip_rotate(images, masks, rotation_degrees, generator)
        loss = soft_dice_loss(torch.sigmoid(model(normalize(images))), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def _predict(model: SegmentationModel, split: SegmentationSplit) -> Iterator[tuple[Tensor, Tensor]]:
    """Sigmoid probabilities and float masks ``(B, 1, H, W)``, batch by batch, with the model in eval mode."""
    model.eval()
    for start in range(0, len(split), _EVAL_BATCH_SIZE):
        rows = slice(start, start + _EVAL_BATCH_SIZE)
        probs = torch.sigmoid(model(normalize(split.images[rows].float() / 255)))
        yield probs, split.masks[rows].unsqueeze(1).float()


def validation_loss(model: SegmentationModel, val: SegmentationSplit) -> float:
    """LD's soft Dice loss, global over the whole validation split (not a mean of batch losses)."""
    overlap = target_sum = prob_sum = torch.zeros((), dtype=torch.float64)
    for probs, masks in _predict(model, val):
        overlap = overlap + (probs * masks).sum().double().cpu()
        target_sum = target_sum + masks.sum().double().cpu()
        prob_sum = prob_sum + probs.sum().double().cpu()
    return float(soft_dice_from_sums(overlap, target_sum, prob_sum))


def _score(model: SegmentationModel, test: SegmentationSplit, fit: RegimeFit) -> RegimeResult:
    dice, iou = [], []
    for probs, masks in _predict(model, test):
        dice.append(dice_per_image(probs, masks).cpu())
        iou.append(iou_per_image(probs, masks).cpu())
    return RegimeResult(
        dice=torch.cat(dice).tolist(),
        iou=torch.cat(iou).tolist(),
        ids=list(test.ids),
        best_epoch=fit.best_epoch,
        best_val_loss=fit.best_val_loss,
        seconds=fit.seconds,
        train_images_per_second=fit.train_images_per_second,
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
