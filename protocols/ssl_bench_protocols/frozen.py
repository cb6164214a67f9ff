"""Frozen-encoder transfer: ``frozen`` (LD's first phase, segmentation) and ``linear-probe`` (classification).

The encoder keeps its weights and its BatchNorm statistics (eval mode); the epoch with the best validation loss
is kept. ``frozen`` trains a fresh U-Net decoder and head with LD's soft Dice loss (``paper``: 512 px, 100
epochs, batch 2 (SIIM 8), Adam 1e-3, Chen et al.). ``linear-probe`` trains a linear head on the pooled deepest
feature, standardised by a parameter-free batch norm as MAE's probe (``paper``: MedMNIST v2's budget, 64 px,
100 epochs, batch 128, Adam 1e-3, selection on the official validation split).
For a method without pretraining (``scratch``) the encoder is a random init: a baseline of what the head alone
learns, not a pretraining result (the leaderboard says so).
"""

from __future__ import annotations

from ssl_bench.api import hookimpl
from ssl_bench.api.supervised import SupervisedProtocol


class Frozen(SupervisedProtocol):
    name = "frozen"
    description = "LD's transfer, phase 1: a fresh U-Net decoder trained on the frozen encoder"
    task_kinds = ("segmentation",)
    frozen_encoder = True


class LinearProbe(SupervisedProtocol):
    name = "linear-probe"
    description = "a linear classifier on the frozen encoder's pooled deepest feature"
    task_kinds = ("classification",)
    frozen_encoder = True
    version = "2"  # 2: the head's batch norm keeps cumulative statistics


@hookimpl
def ssl_bench_register_protocols(register):
    register(Frozen)
    register(LinearProbe)
