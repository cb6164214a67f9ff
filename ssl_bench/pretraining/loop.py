"""The pretraining loop: a method's stages on a pool, checkpointed so that a kill at any step resumes.

A checkpoint holds the stage, epoch and step, the model, optimiser and scheduler, the sampling
generator and torch's global random state: a resumed run draws the same numbers as an unbroken one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ssl_bench.errors import PluginError, TrainingError
from ssl_bench.method import Method, Stage
from ssl_bench.pools import PreparedPool
from ssl_bench.results import (
    DamagedArtefact,
    checkpoint_seconds,
    load_torch,
    remove_checked,
    resume_checkpoint,
    save_torch,
)

BEST_ENCODER = "best_encoder.pt"
#: The loss is read back (a host sync) and checked for NaN every this many steps and at each epoch's end.
LOSS_READ_STEPS = 25
#: At most this many held-out images are scored after each epoch.
VALIDATION_IMAGES = 64


@dataclass(frozen=True)
class PretrainOutcome:
    encoder_state: dict[str, torch.Tensor]
    seconds: float
    source_images: int
    #: steps that an earlier, interrupted process had already done (0 for an unbroken run)
    resumed_from_step: int
    #: the loss on the held-out images after each epoch (None where the pool holds none out)
    val_losses: list[float | None]
    #: the final stage's epoch (from 1) whose encoder is exported, where the method selects the best one
    selected_epoch: int | None = None

    @property
    def images_per_second(self) -> float:
        return self.source_images / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class _Position:
    stage: int = 0
    epoch: int = 0
    step: int = 0
    steps: int = 0
    seconds: float = 0.0
    source_images: int = 0
    val_losses: list[float | None] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int | None = None


def _rows(array: np.ndarray, index: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array[index])).to(device, non_blocking=True)


def _carry_by_name(source: nn.Module, target: nn.Module) -> None:
    """Start a stage from the previous one's parameters wherever names and shapes match."""
    target_state = target.state_dict()
    matching = {k: v for k, v in source.state_dict().items() if k in target_state and v.shape == target_state[k].shape}
    target.load_state_dict(matching, strict=False)


class Trainer:
    """One method's pretraining steps on a pool: seeded model builds, sampling, steps, loss read-back, validation."""

    def __init__(
        self,
        method: Method,
        encoder: nn.Module,
        pool: PreparedPool,
        device: torch.device,
        seed: int,
        extras: np.ndarray | None = None,
        bf16: bool = False,
    ):
        self.method, self.encoder, self.pool, self.device = method, encoder, pool, device
        self.seed, self.extras, self.bf16 = seed, extras, bf16
        self.generator = torch.Generator().manual_seed(seed)

    def build(self, stage_index: int, stage: Stage, previous: nn.Module | None):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1 + stage_index)
            model = self.method.build_model(self.encoder, stage, self.pool.channels)
        if getattr(model, "encoder", None) is not self.encoder:
            raise PluginError(f"{self.method.name}.build_model must keep the given encoder as `model.encoder`")
        if previous is not None:
            _carry_by_name(previous, model)
        model.to(self.device)
        if self.bf16:
            model.to(memory_format=torch.channels_last)  # oneDNN's and cuDNN's fast layout for bf16 convolutions
        optimizer, scheduler = self.method.configure_optimizer(model, stage)
        return model, optimizer, scheduler

    def step(self, model, optimizer, stage: Stage, step: int, total: int) -> torch.Tensor:
        """One optimiser step; returns the detached loss without reading it (no host sync)."""
        picks = torch.randint(len(self.pool.train_index), (stage.batch_size,), generator=self.generator).numpy()
        loss = self._loss(model, self.pool.train_index[picks], stage, self.generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.method.after_step(model, stage, step, total)
        return loss.detach()

    def read_loss(self, loss: torch.Tensor, stage: Stage, step: int) -> float:
        """The loss as a number (a host sync, so only every few steps); a non-finite one stops the run."""
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(f"{self.method.name}: the loss became {value} by step {step} of {stage.name}")
        return value

    def _loss(self, model, index: np.ndarray, stage: Stage, generator: torch.Generator) -> torch.Tensor:
        images = _rows(self.pool.images, index, self.device).float().div_(255)
        keywords = {} if self.extras is None else {"extras": _rows(self.extras, index, self.device)}
        if self.bf16:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.method.training_step(model, images, stage, generator, **keywords)
        return loss.float()

    @torch.no_grad()
    def validate(self, model, stage: Stage, position: _Position) -> float | None:
        """Mean loss over the held-out images, in eval mode, with its own seeded random numbers."""
        if len(self.pool.val_index) == 0:
            return None
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * position.stage + position.epoch)
        model.eval()
        losses = []
        for start in range(0, min(len(self.pool.val_index), VALIDATION_IMAGES), stage.batch_size):
            index = self.pool.val_index[start : start + stage.batch_size]
            losses.append(self._loss(model, index, stage, generator).item())
        model.train()
        return sum(losses) / len(losses)


def _save_checkpoint(path: Path, position: _Position, model, optimizer, scheduler, generator) -> None:
    state = {
        "position": vars(position),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    save_torch(path, state)


def pretrain(
    method: Method,
    encoder: nn.Module,
    pool: PreparedPool,
    *,
    stages: Sequence[Stage],
    precision: str = "fp32",
    seed: int,
    device: torch.device,
    workdir: Path,
    extras: np.ndarray | None = None,
    progress: bool = True,
) -> PretrainOutcome:
    """Run ``stages`` (``method``'s schedule under the run's budget) on ``pool``, resuming from ``workdir/state.pt``
    if it exists.

    ``precision``: ``bf16`` runs each step under bf16 autocast with a channels-last network. ``extras``: the
    method's per-image pool extras (see ``Method.pool_extras``), if any."""
    trainer = Trainer(method, encoder, pool, device, seed, extras, bf16=precision == "bf16")
    state_path = workdir / "state.pt"
    saved = resume_checkpoint(state_path, device, weights_only=False)
    position = _Position(**saved["position"]) if saved else _Position()
    resumed_from_step = position.steps
    torch.manual_seed(seed)
    model = None
    for stage_index in range(position.stage, len(stages)):
        stage = stages[stage_index]
        model, optimizer, scheduler = trainer.build(stage_index, stage, model)
        if saved and stage_index == position.stage:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(saved["scheduler"])
            trainer.generator.set_state(saved["generator"])
            torch.set_rng_state(saved["torch_rng"])
        else:
            position = dataclasses.replace(position, stage=stage_index, epoch=0, step=0)
        saved = None
        select_best = method.select_best_checkpoint and stage_index == len(stages) - 1
        _run_stage(trainer, stage, position, model, optimizer, scheduler, state_path, progress, select_best)
    best_path = state_path.with_name(BEST_ENCODER)
    if position.best_epoch is not None:
        try:
            encoder_state = load_torch(best_path, map_location="cpu", weights_only=True)
        except DamagedArtefact as error:  # the selection cannot be trusted: the next try trains from the start
            remove_checked(state_path)
            raise DamagedArtefact(f"{error}; its checkpoint was removed, so running again pretrains anew") from error
    else:
        encoder_state = _encoder_state(encoder)
    return PretrainOutcome(
        encoder_state,
        position.seconds,
        position.source_images,
        resumed_from_step,
        list(position.val_losses),
        position.best_epoch,
    )


def _encoder_state(encoder: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}


def _run_stage(
    trainer: Trainer, stage: Stage, position: _Position, model, optimizer, scheduler, state_path, progress, select_best
):
    """Train ``stage`` from ``position`` to its end, checkpointing on time and at every epoch's end; with
    ``select_best``, also keep the encoder of the epoch with the lowest held-out loss."""
    total = stage.steps
    done = position.epoch * stage.steps_per_epoch + position.step
    bar = tqdm(
        total=total,
        initial=done,
        desc=f"pretrain {trainer.method.name}/{stage.name}",
        unit="step",
        disable=not progress,
        leave=False,
    )
    last_checkpoint = time.monotonic()
    while position.epoch < stage.epochs:
        model.train()
        while position.step < stage.steps_per_epoch:
            started = time.perf_counter()
            loss = trainer.step(model, optimizer, stage, done, total)
            position.seconds += time.perf_counter() - started
            position.source_images += stage.batch_size
            position.steps += 1
            position.step += 1
            done += 1
            bar.update()
            if position.step % LOSS_READ_STEPS == 0 or position.step == stage.steps_per_epoch:
                bar.set_postfix(loss=f"{trainer.read_loss(loss, stage, done):.4f}", epoch=position.epoch + 1)
            if time.monotonic() - last_checkpoint >= checkpoint_seconds():
                _save_checkpoint(state_path, position, model, optimizer, scheduler, trainer.generator)
                last_checkpoint = time.monotonic()
        val_loss = trainer.validate(model, stage, position)
        if val_loss is not None and not math.isfinite(val_loss):  # a diverged encoder is not a pretrained one
            raise TrainingError(
                f"{trainer.method.name}: the held-out loss became {val_loss} after epoch {position.epoch + 1} of "
                f"{stage.name}"
            )
        position.epoch, position.step = position.epoch + 1, 0
        position.val_losses.append(val_loss)
        if select_best and val_loss is not None and val_loss < position.best_val_loss:
            # Written before the checkpoint that records it: a kill in between only redoes this epoch.
            save_torch(state_path.with_name(BEST_ENCODER), _encoder_state(trainer.encoder))
            position.best_val_loss, position.best_epoch = val_loss, position.epoch
        if scheduler is not None:
            scheduler.step()
        _save_checkpoint(state_path, position, model, optimizer, scheduler, trainer.generator)
        last_checkpoint = time.monotonic()
    bar.close()
