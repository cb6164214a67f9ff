"""The classification protocol (MedMNIST-style): a linear probe on the frozen encoder, then fine-tuning.

The head is a linear layer on the average-pooled deepest encoder feature, standardised by a parameter-free
batch norm. Regime ``frozen`` (linear
probe) trains the head on the frozen encoder; ``finetune`` starts from the best probe and trains
everything. Each keeps the epoch with the lowest validation loss (the task's official validation split)
and is scored on test: AUC (macro over classes one-vs-rest, or over labels for multi-label tasks) as the
headline and per-image accuracy.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from time import perf_counter

import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import Tensor, nn
from tqdm.auto import tqdm

from ssl_bench.augment import normalize, random_flip
from ssl_bench.models import Encoder
from ssl_bench.task import ClassificationData, ClassificationSplit

_EVAL_BATCH_SIZE = 256


@dataclass(frozen=True)
class ClassificationProtocol:
    image_size: int
    frozen_epochs: int
    finetune_epochs: int
    batch_size: int
    lr: float = 1e-3
    #: The demo profile trains on a prefix of the training split only (a smoke test).
    max_train_images: int | None = None

    @classmethod
    def for_profile(cls, profile: str) -> ClassificationProtocol:
        """``paper``/``matched``: MedMNIST v2's budget (100 epochs, batch 128, Adam 1e-3) per regime, at 64 px."""
        if profile in ("paper", "matched"):
            return cls(image_size=64, frozen_epochs=100, finetune_epochs=100, batch_size=128)
        if profile == "demo":
            return cls(image_size=32, frozen_epochs=3, finetune_epochs=3, batch_size=64, max_train_images=512)
        raise ValueError(f"Unknown profile {profile!r}: use 'demo', 'paper' or 'matched'.")


@dataclass(frozen=True)
class ClassificationRegime:
    auc: float
    correct: list[float]
    ids: list[str]
    best_epoch: int
    best_val_loss: float
    seconds: float

    @property
    def metrics(self) -> dict[str, dict]:
        """The result file's form: AUC is a set-level value; accuracy is per image."""
        return {
            "auc": {"value": self.auc, "n_images": len(self.ids)},
            "acc": {"per_image": self.correct, "ids": self.ids},
        }


class Classifier(nn.Module):
    def __init__(self, encoder: Encoder, outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        channels = encoder.feature_info[-1].channels
        # Features standardised before the linear layer (as MAE's linear probe): a probe on raw features of an
        # arbitrary scale would mostly measure how well Adam copes with that scale.
        self.head = nn.Sequential(nn.BatchNorm1d(channels, affine=False), nn.Linear(channels, outputs))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.encoder(images)[-1].mean(dim=(2, 3)))


def roc_auc(scores: Tensor, positives: Tensor) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties averaged; NaN if one class."""
    n_pos = int(positives.sum())
    n_neg = len(positives) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores.double().numpy())
    return float((ranks[positives.numpy().astype(bool)].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auc(probabilities: Tensor, labels: Tensor, multi_label: bool) -> float:
    """Macro AUC: over labels (multi-label), one-vs-rest over classes, or of class 1 for two classes."""
    if multi_label:
        columns = [roc_auc(probabilities[:, k], labels[:, k] == 1) for k in range(labels.shape[1])]
    elif probabilities.shape[1] == 2:
        columns = [roc_auc(probabilities[:, 1], labels[:, 0] == 1)]
    else:
        columns = [roc_auc(probabilities[:, k], labels[:, 0] == k) for k in range(probabilities.shape[1])]
    finite = [c for c in columns if not math.isnan(c)]
    return sum(finite) / len(finite) if finite else math.nan


class _Run:
    """One classification transfer: data on the device, the model, and the task's loss."""

    def __init__(self, data: ClassificationData, protocol: ClassificationProtocol, multi_label: bool, device):
        self.protocol, self.multi_label, self.device = protocol, multi_label, device
        train = data.train if protocol.max_train_images is None else data.train.subset(slice(protocol.max_train_images))
        self.train, self.val, self.test = (self._prepare(split) for split in (train, data.val, data.test))

    def _prepare(self, split: ClassificationSplit) -> tuple[Tensor, Tensor, list[str]]:
        size = self.protocol.image_size
        images = split.images.to(self.device).float().div(255)
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        return images, split.labels.to(self.device), list(split.ids)

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(logits, labels.float())
        return F.cross_entropy(logits, labels[:, 0])

    def probabilities(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)

    @torch.no_grad()
    def predict(self, model: Classifier, split) -> Tensor:
        model.eval()
        images = split[0]
        return torch.cat(
            [model(normalize(images[i : i + _EVAL_BATCH_SIZE])) for i in range(0, len(images), _EVAL_BATCH_SIZE)]
        )

    def fit(self, model: Classifier, epochs: int, generator: torch.Generator, desc: str, progress: bool):
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=self.protocol.lr)
        images, labels, _ = self.train
        best = (math.inf, 0, None)
        started = perf_counter()
        for epoch in tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress, leave=False):
            model.train()
            model.encoder.train(any(p.requires_grad for p in model.encoder.parameters()))
            for batch in torch.randperm(len(images), generator=generator).split(self.protocol.batch_size):
                batch = batch.to(self.device)
                views = random_flip(images[batch], generator, horizontal=True, vertical=True)
                loss = self.loss(model(normalize(views)), labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            val_loss = float(self.loss(self.predict(model, self.val), self.val[1]))
            if val_loss < best[0]:
                best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
        return best, perf_counter() - started

    def score(self, model: Classifier, best, seconds: float) -> ClassificationRegime:
        logits = self.predict(model, self.test)
        probabilities, labels = self.probabilities(logits).cpu(), self.test[1].cpu()
        if self.multi_label:
            correct = ((probabilities > 0.5).long() == labels).float().mean(dim=1)
        else:
            correct = (probabilities.argmax(dim=1) == labels[:, 0]).float()
        auc = _auc(probabilities, labels, self.multi_label)
        return ClassificationRegime(auc, correct.tolist(), self.test[2], best[1], best[0], seconds)


def run_classification(
    encoder: Encoder,
    data: ClassificationData,
    protocol: ClassificationProtocol,
    *,
    classes: int,
    multi_label: bool,
    label_fraction: float,
    generator: torch.Generator,
    device: torch.device,
    progress: bool = True,
) -> dict[str, ClassificationRegime]:
    """Linear probe then fine-tune a copy of ``encoder``; every random number comes from ``generator``."""
    labelled = math.floor(label_fraction * len(data.train) + 1e-9)
    data = ClassificationData(data.train.subset(slice(labelled)), data.val, data.test)
    run = _Run(data, protocol, multi_label, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        model = Classifier(copy.deepcopy(encoder), classes).to(device)
    regimes = {}
    for regime, epochs in (("frozen", protocol.frozen_epochs), ("finetune", protocol.finetune_epochs)):
        model.encoder.requires_grad_(regime == "finetune")
        best, seconds = run.fit(model, epochs, generator, regime, progress)
        model.load_state_dict(best[2])
        regimes[regime] = run.score(model, best, seconds)
    return regimes
