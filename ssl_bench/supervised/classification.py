"""Classification as a downstream task kind (MedMNIST-style): a linear head on the pooled deepest feature.

The head is a linear layer on the average-pooled deepest encoder feature, standardised by a parameter-free
batch norm. Selection uses the task's official validation split (cross-entropy, or binary cross-entropy for
multi-label tasks); test scores are AUC (macro over classes one-vs-rest, or over labels for multi-label tasks)
as the headline and per-image accuracy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import Tensor, nn

from ssl_bench.augment import normalize, random_flip
from ssl_bench.models import Encoder
from ssl_bench.protocol import Scores
from ssl_bench.supervised.labelled import labelled_rows
from ssl_bench.supervised.loop import SupervisedProblem, SupervisedSettings
from ssl_bench.task import ClassificationData, ClassificationSplit

_EVAL_BATCH_SIZE = 256


class Classifier(nn.Module):
    def __init__(self, encoder: Encoder, outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        channels = encoder.feature_info[-1].channels
        # Features standardised before the linear layer (as MAE's linear probe): a probe on raw features of an
        # arbitrary scale would mostly measure how well Adam copes with that scale. The statistics that evaluation
        # uses are the cumulative average of the training batches' (momentum None): the default 0.1 would still
        # hold much of their initial 0 and 1 after a short schedule, and evaluation would standardise otherwise.
        self.head = nn.Sequential(nn.BatchNorm1d(channels, affine=False, momentum=None), nn.Linear(channels, outputs))

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


def _prepare(split: ClassificationSplit, size: int, device: torch.device) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    images = split.images.to(device).float().div(255)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    return images, split.labels.to(device), tuple(split.ids)


class ClassificationProblem(SupervisedProblem):
    """A classification task's official splits at the settings' size on the device, and the labelled subset of train.

    The subset is drawn from ``subset_seed``, stratified by class (not for multi-label tasks, whose label
    combinations are too many to keep each one's share), or is the training list's prefix where ``subset_seed`` is
    None; the settings' ``max_train_images`` caps it.
    """

    def __init__(
        self,
        data: ClassificationData,
        settings: SupervisedSettings,
        *,
        label_fraction: float,
        subset_seed: int | None,
        classes: int,
        multi_label: bool,
        device: torch.device,
    ) -> None:
        rows = labelled_rows(
            len(data.train),
            label_fraction,
            seed=subset_seed,
            classes=None if multi_label else data.train.labels[:, 0],
            limit=settings.max_train_images,
        )
        size = settings.image_size
        self.train = _prepare(data.train.subset(rows), size, device)
        self.val, self.test = (_prepare(split, size, device) for split in (data.val, data.test))
        self.classes, self.multi_label = classes, multi_label
        self.val_loss_name = "binary_cross_entropy" if multi_label else "cross_entropy"

    @property
    def train_size(self) -> int:
        return len(self.train[0])

    def build_model(self, encoder: nn.Module) -> nn.Module:
        return Classifier(encoder, self.classes)

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(logits, labels.float())
        return F.cross_entropy(logits, labels[:, 0])

    def train_loss(self, model: nn.Module, rows: Tensor, generator: torch.Generator) -> Tensor:
        images, labels, _ = self.train
        rows = rows.to(images.device)
        views = random_flip(images[rows], generator, horizontal=True, vertical=True)
        return self._loss(model(normalize(views)), labels[rows])

    @torch.no_grad()
    def _logits(self, model: nn.Module, images: Tensor) -> Tensor:
        model.eval()
        return torch.cat(
            [model(normalize(images[i : i + _EVAL_BATCH_SIZE])) for i in range(0, len(images), _EVAL_BATCH_SIZE)]
        )

    def validation_loss(self, model: nn.Module) -> float:
        images, labels, _ = self.val
        return float(self._loss(self._logits(model, images), labels))

    def score(self, model: nn.Module) -> dict[str, Scores]:
        images, labels, ids = self.test
        logits = self._logits(model, images)
        probabilities = (torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)).cpu()
        labels = labels.cpu()
        if self.multi_label:
            correct = ((probabilities > 0.5).long() == labels).float().mean(dim=1)
        else:
            correct = (probabilities.argmax(dim=1) == labels[:, 0]).float()
        return {
            "auc": Scores(value=_auc(probabilities, labels, self.multi_label)),
            "acc": Scores(per_image=tuple(correct.tolist()), ids=ids),
        }
