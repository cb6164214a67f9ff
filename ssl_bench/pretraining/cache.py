"""The pretraining cache: each pretraining trained once, by whichever worker claims it first, and kept as
``cache/pretrain/<id>/encoder.pt`` beside its :class:`~ssl_bench.record.PretrainingRecord`; every job that needs
it loads it from there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ssl_bench.checkpoints import checkpoint_encoder
from ssl_bench.config import RunConfig
from ssl_bench.errors import DataError
from ssl_bench.locks import Lock
from ssl_bench.models import create_encoder
from ssl_bench.planning import Pretraining
from ssl_bench.pools import prepare_extras
from ssl_bench.pretraining.loop import BEST_ENCODER, pretrain
from ssl_bench.record import PretrainingRecord, read_record, write_record
from ssl_bench.resources import PeakMemory
from ssl_bench.results import (
    artefact_problem,
    load_torch,
    pool_cache_dir,
    pretrain_dir,
    remove_checked,
    save_torch,
)

ENCODER_WEIGHTS = "encoder.pt"
PRETRAINING_RECORD = "pretraining.json"


def finished_pretraining(folder: Path) -> PretrainingRecord | None:
    """The record of the pretraining in ``folder`` if it finished (its weights pass their check and a readable
    record is there)."""
    record = folder / PRETRAINING_RECORD
    if not record.exists() or artefact_problem(folder / ENCODER_WEIGHTS) is not None:
        return None
    try:
        return read_record(record, PretrainingRecord)
    except DataError:
        return None  # a record that cannot be read marks nothing: the pretraining runs again


class PretrainingCache:
    """Encoders of a run's pretrainings: trained now under a lock, or loaded from the results folder."""

    def __init__(
        self, config: RunConfig, device: torch.device, progress: bool = True, echo: Callable[[str], None] = print
    ) -> None:
        self.config, self.device, self.progress, self.echo = config, device, progress, echo
        self._refreshed: set[str] = set()  # pretrainings that --overwrite always has already redone

    def _fresh_encoder(self, pretraining: Pretraining) -> torch.nn.Module:
        """The encoder at its random init, drawn from the pretraining's seed, or with its checkpoint's weights."""
        if pretraining.checkpoint is not None:
            return checkpoint_encoder(pretraining.checkpoint, pretraining.encoder, pretraining.channels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(pretraining.seed)
            return create_encoder(pretraining.encoder, in_chans=pretraining.channels)

    def encoder(self, pretraining: Pretraining) -> tuple[torch.nn.Module, PretrainingRecord | None] | None:
        """The encoder of ``pretraining``, trained now or loaded from the cache, and its record (None for a method
        without pretraining); None while another worker holds its lock (it is training it)."""
        encoder = self._fresh_encoder(pretraining)
        if pretraining.pool is None:
            return encoder, None
        folder = pretrain_dir(self.config.results, pretraining.id)
        refresh = self.config.overwrite == "always" and pretraining.id not in self._refreshed
        if refresh or finished_pretraining(folder) is None:
            lock = Lock(folder)
            if not lock.acquire():
                return None
            with lock:
                if lock.taken_over:
                    self.echo(
                        f"pretraining {pretraining.method.variant} ({pretraining.id}): took over the lock of "
                        f"{lock.taken_over.describe()}, which is gone; resuming from its checkpoint"
                    )
                if refresh:
                    for name in (ENCODER_WEIGHTS, PRETRAINING_RECORD, "state.pt", BEST_ENCODER):
                        remove_checked(folder / name)
                    self._refreshed.add(pretraining.id)
                if finished_pretraining(folder) is None:  # not finished by another just before
                    self._forget_unusable(folder, pretraining)
                    self._pretrain(pretraining, encoder, folder)
        weights = load_torch(folder / ENCODER_WEIGHTS, map_location="cpu", weights_only=True)
        encoder.load_state_dict(weights, strict=True)
        return encoder, finished_pretraining(folder)

    def _forget_unusable(self, folder: Path, pretraining: Pretraining) -> None:
        """Says why a pretraining that finished once cannot be used (its weights failed their check, or its record
        cannot be read) and removes its record, so that it is pretrained again."""
        record, weights = folder / PRETRAINING_RECORD, folder / ENCODER_WEIGHTS
        if record.exists():
            why = f"{weights} {problem}" if (problem := artefact_problem(weights)) else f"{record} is unreadable"
            self.echo(f"{why}: pretraining {pretraining.method.variant} again")
            record.unlink()

    def _pretrain(self, pretraining: Pretraining, encoder: torch.nn.Module, folder: Path) -> None:
        self.echo(f"pretraining {pretraining.method.variant} ({pretraining.id}) on {pretraining.pool.id}")
        results = self.config.results
        encoder.to(self.device)
        with PeakMemory(self.device) as memory:
            outcome = pretrain(
                pretraining.method,
                encoder,
                pretraining.pool,
                stages=pretraining.stages,
                precision=pretraining.precision,
                seed=pretraining.seed,
                device=self.device,
                workdir=folder,
                extras=prepare_extras(pretraining.pool, pretraining.method, pool_cache_dir(results), self.echo),
                progress=self.progress,
            )
        save_torch(folder / ENCODER_WEIGHTS, outcome.encoder_state)
        record = PretrainingRecord(
            spec=pretraining.spec,
            seconds=outcome.seconds,
            source_images=outcome.source_images,
            images_per_second=outcome.images_per_second,
            views_per_second=outcome.images_per_second * pretraining.method.views_per_image,
            peak_memory_mb=memory.peak_mb,
            resumed_from_step=outcome.resumed_from_step,
            val_losses=outcome.val_losses,
            selected_epoch=outcome.selected_epoch,
            device=self.device.type,
            torch_threads=torch.get_num_threads(),
        )
        write_record(folder / PRETRAINING_RECORD, record)
        # The record is the marker of a finished pretraining; what only resuming needed goes after it.
        for leftover in ("state.pt", BEST_ENCODER):
            remove_checked(folder / leftover)
        for orphan in folder.glob(".*.tmp"):
            orphan.unlink(missing_ok=True)
