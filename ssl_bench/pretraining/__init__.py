"""Pretraining: the loop that trains a method's stages on a pool (:mod:`.loop`, resumable at any step) and the
cache that trains each pretraining once and hands its encoder to every job that needs it (:mod:`.cache`)."""

from ssl_bench.pretraining.cache import PretrainingCache, finished_pretraining
from ssl_bench.pretraining.loop import PretrainOutcome, Trainer, pretrain

__all__ = ["PretrainOutcome", "PretrainingCache", "Trainer", "finished_pretraining", "pretrain"]
