"""The one supervised downstream loop, shared by every task kind: seeded init, epochs, selection, NaN guard.

A :class:`SupervisedProblem` says how a kind of task (segmentation, classification) is prepared, trained, validated
and scored; :func:`fit` owns the rest. Selection keeps the epoch with the lowest validation loss (ties keep the
earlier epoch); validation data come from the training list or the task's validation split, never from test.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ssl_bench.budget import Budget
from ssl_bench.errors import ConfigError, TrainingError, require_whole_numbers
from ssl_bench.protocol import Scores
from ssl_bench.results import checkpoint_seconds, remove_checked, resume_checkpoint, save_torch
from ssl_bench.task import Task

ModuleT = TypeVar("ModuleT", bound=nn.Module)


@dataclass(frozen=True)
class SupervisedSettings:
    """A supervised protocol's schedule: input size, epochs, batch size, Adam's learning rate.

    ``lr_decay_epochs``: after each of these epochs the learning rate is multiplied by ``lr_decay`` (MedMNIST v2's
    recipe: 0.1 after epochs 50 and 75 of 100). ``max_train_images`` caps the labelled training images (the demo
    budget's smoke test of large sets).
    """

    image_size: int
    epochs: int
    batch_size: int
    lr: float = 1e-3
    lr_decay_epochs: tuple[int, ...] = ()
    lr_decay: float = 0.1
    max_train_images: int | None = None

    def __post_init__(self) -> None:
        require_whole_numbers(self, {"image_size": 1, "epochs": 1, "batch_size": 1}, "protocol")
        if not self.lr > 0:
            raise ConfigError(f"protocol setting lr must be > 0, got {self.lr!r}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"protocol setting lr_decay must be in (0, 1], got {self.lr_decay!r}")
        epochs = self.lr_decay_epochs
        if any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in epochs) or list(epochs) != sorted(
            set(epochs)
        ):
            raise ConfigError(
                f"protocol setting lr_decay_epochs must be increasing whole epochs >= 1, e.g. [50, 75]; got {epochs!r}"
            )

    def lr_at(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (counted from 1): decayed once per listed epoch already finished."""
        return self.lr * self.lr_decay ** sum(epoch > done for done in self.lr_decay_epochs)


def standard_settings(budget: Budget, task: Task) -> SupervisedSettings:
    """The published schedules, LD's transfer for segmentation and MedMNIST v2's for classification, or the demo's,
    with the budget's downstream epochs and input size cap where it sets them.

    ``paper`` scale: segmentation at 512 px, 100 epochs, the task's paper batch size (LD: 2; SIIM 8), Adam 1e-3;
    classification at 64 px, 100 epochs, batch 128, Adam 1e-3 decayed x0.1 after half and three quarters of the
    epochs. ``demo`` scale: small, fast runs for trying things (segmentation 8 epochs: the supervised jobs are
    most of the quickstart's time, and 12 put it past 10 minutes on 2 cores).
    """
    demo = budget.scale == "demo"
    if task.kind == "classification":
        settings = SupervisedSettings(32, 3, 64, max_train_images=512) if demo else SupervisedSettings(64, 100, 128)
    else:
        settings = SupervisedSettings(96, 8, 4) if demo else SupervisedSettings(512, 100, task.paper_batch_size)
    epochs = budget.downstream_epochs or settings.epochs
    decay_epochs = () if demo or task.kind != "classification" else tuple(sorted({epochs // 2, 3 * epochs // 4} - {0}))
    return dataclasses.replace(
        settings,
        epochs=epochs,
        image_size=min(settings.image_size, budget.downstream_image_size or settings.image_size),
        lr_decay_epochs=decay_epochs,
    )


class SupervisedProblem(ABC):
    """One task's supervised problem: how its kind of task (segmentation, classification) is trained and scored,
    on its data already prepared for the device."""

    #: What :meth:`validation_loss` computes, recorded with the selection.
    val_loss_name: str

    @property
    @abstractmethod
    def train_size(self) -> int:
        """The number of training images (one epoch visits each once)."""

    @abstractmethod
    def build_model(self, encoder: nn.Module) -> nn.Module:
        """The downstream model on ``encoder`` (kept as ``model.encoder``), with a fresh head."""

    @abstractmethod
    def train_loss(self, model: nn.Module, rows: Tensor, generator: torch.Generator) -> Tensor:
        """The loss of a training batch (rows of the training split), augmentation drawn from ``generator``."""

    @abstractmethod
    def validation_loss(self, model: nn.Module) -> float:
        """The selection loss on the validation data, with the model in eval mode."""

    @abstractmethod
    def score(self, model: nn.Module) -> dict[str, Scores]:
        """Test scores of ``model``, per metric name."""


@dataclass(frozen=True)
class Fit:
    """What :func:`fit` selected: the best validation checkpoint and the run's timings."""

    best_state: dict[str, Tensor]
    best_epoch: int
    best_val_loss: float
    seconds: float
    train_images_per_second: float


def seeded_init(build: Callable[[], ModuleT], generator: torch.Generator) -> ModuleT:
    """``build()`` with its layers' init drawn from ``generator``, leaving torch's global RNG untouched."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def fresh_model(build: Callable[[nn.Module], ModuleT], encoder: nn.Module, generator: torch.Generator) -> ModuleT:
    """``build`` on a copy of ``encoder`` (the caller's is never modified), its init drawn from ``generator``."""
    return seeded_init(lambda: build(copy.deepcopy(encoder)), generator)


def set_trainable(model: nn.Module, train_encoder: bool) -> None:
    """Train the head, and the encoder only if ``train_encoder``: a frozen encoder also keeps its BN statistics."""
    model.train()
    model.requires_grad_(True)
    model.encoder.requires_grad_(train_encoder)
    model.encoder.train(train_encoder)


def fit(
    problem: SupervisedProblem,
    model: nn.Module,
    *,
    epochs: int,
    batch_size: int,
    lr: float | Callable[[int], float],
    train_encoder: bool,
    generator: torch.Generator,
    progress: bool = False,
    desc: str = "",
    checkpoint: Path | None = None,
) -> Fit:
    """Train ``model`` with a fresh Adam for ``epochs``; keep the epoch with the lowest validation loss. ``lr`` is the
    learning rate, or a function of the epoch (counted from 1) that gives it.

    A NaN training or validation loss stops the run with :class:`TrainingError` (a diverged run is not a score).
    ``model`` ends in its last epoch's state; load ``best_state`` to use the best. With ``checkpoint``, the run's
    state (model, optimiser, selection, random numbers) is saved there at an epoch's end every
    ``SSL_BENCH_CHECKPOINT_SECONDS`` (60) and a run that finds it continues from it, to the same numbers.
    """
    set_trainable(model, train_encoder)
    lr_at = lr if callable(lr) else lambda _epoch: lr
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr_at(1))
    state = _Progress()
    if checkpoint is not None and (snapshot := resume_checkpoint(checkpoint, next(model.parameters()).device)):
        state = _resume(snapshot, model, optimizer, generator)
    start, last_saved = perf_counter() - state.seconds, perf_counter()
    bar = tqdm(range(state.epoch + 1, epochs + 1), desc=desc, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch)
        epoch_start = perf_counter()
        train_loss = _train_epoch(problem, model, optimizer, batch_size, train_encoder, generator)
        state.train_seconds += perf_counter() - epoch_start
        loss = problem.validation_loss(model)
        if not (math.isfinite(train_loss) and math.isfinite(loss)):
            raise TrainingError(
                f"{desc or 'training'}: the loss became {train_loss if not math.isfinite(train_loss) else loss} "
                f"in epoch {epoch}; try a lower learning rate (lr={lr_at(epoch)})"
            )
        if loss < state.best_loss:
            state.best_epoch, state.best_loss = epoch, loss
            state.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state.epoch, state.seconds = epoch, perf_counter() - start
        if checkpoint is not None and epoch < epochs and perf_counter() - last_saved >= checkpoint_seconds():
            _save(checkpoint, state, model, optimizer, generator)
            last_saved = perf_counter()
        bar.set_postfix(val_loss=f"{loss:.4f}", best=f"{state.best_loss:.4f}@{state.best_epoch}")
    if checkpoint is not None:
        remove_checked(checkpoint)  # finished: only an interrupted run needs it
    images_per_second = epochs * problem.train_size / max(state.train_seconds, 1e-9)
    return Fit(state.best_state, state.best_epoch, state.best_loss, perf_counter() - start, images_per_second)


@dataclass
class _Progress:
    """Where a :func:`fit` run stands: the last finished epoch, the selection so far, and the time spent."""

    epoch: int = 0
    best_state: dict[str, Tensor] = field(default_factory=dict)
    best_epoch: int = 0
    best_loss: float = math.inf
    train_seconds: float = 0.0
    seconds: float = 0.0


def _save(path: Path, state: _Progress, model: nn.Module, optimizer, generator: torch.Generator) -> None:
    snapshot = {
        "progress": dataclasses.asdict(state),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
    }
    save_torch(path, snapshot)


def _resume(snapshot: dict, model: nn.Module, optimizer, generator: torch.Generator) -> _Progress:
    model.load_state_dict(snapshot["model"], strict=True)
    optimizer.load_state_dict(snapshot["optimizer"])
    generator.set_state(snapshot["generator"].cpu())
    return _Progress(**snapshot["progress"])


def _train_epoch(
    problem: SupervisedProblem,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    train_encoder: bool,
    generator: torch.Generator,
) -> float:
    """One pass over the training split in a seeded order; the mean batch loss (one host sync per epoch)."""
    set_trainable(model, train_encoder)
    losses = []
    batches = list(torch.randperm(problem.train_size, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        # A batch of one image has no batch statistics (BatchNorm1d refuses it): it joins the batch before.
        batches[-2:] = [torch.cat(batches[-2:])]
    for rows in batches:
        loss = problem.train_loss(model, rows, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return float(torch.stack(losses).float().mean())
