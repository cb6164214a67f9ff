"""Classification as a downstream task kind and the MedMNIST task: AUC by hand, an easy problem learnt, files read
strictly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import shared_data
from ssl_bench_protocols.finetune import Finetune, FinetuneSettings
from ssl_bench_protocols.frozen import LinearProbe
from torch import nn

from ssl_bench.augment import normalize
from ssl_bench.config import resolve_config
from ssl_bench.engine import Engine
from ssl_bench.errors import DataError
from ssl_bench.models import create_encoder
from ssl_bench.planning import build_plan
from ssl_bench.plugins import get_registry
from ssl_bench.protocol import Context, Outcome
from ssl_bench.supervised.classification import ClassificationProblem, Classifier, _auc, roc_auc
from ssl_bench.supervised.loop import SupervisedSettings
from ssl_bench.supervised.protocol import supervised_problem, supervised_transfer
from ssl_bench.task import ClassificationData, ClassificationSplit, Task

CPU = torch.device("cpu")


def pair_counting_auc(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """AUC from its definition: the share of (positive, negative) pairs ranked right, ties counting one half."""
    pos, neg = scores[positives].tolist(), scores[~positives].tolist()
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


# --- AUC by hand ------------------------------------------------------------------------------


def test_roc_auc_against_pair_counting():
    # Positives 0.35, 0.8 against negatives 0.1, 0.4: 0.35 beats 0.1 but not 0.4, 0.8 beats both -> 3 of 4 pairs.
    assert roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([False, False, True, True])) == 0.75
    assert roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([False, True])) == 0.5  # a tie counts one half
    assert np.isnan(roc_auc(torch.tensor([0.2, 0.3]), torch.tensor([True, True])))
    scores = torch.rand(40, generator=torch.Generator().manual_seed(0)).mul(4).round()  # many ties
    positives = torch.rand(40, generator=torch.Generator().manual_seed(1)) < 0.4
    assert roc_auc(scores, positives) == pytest.approx(pair_counting_auc(scores, positives))


def test_macro_auc_one_vs_rest():
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.6, 0.1, 0.3]])
    labels = torch.tensor([[0], [1], [2], [1]])
    # class 0: positive 0.7 vs negatives 0.2, 0.3, 0.6 -> 1; class 1: positives 0.7, 0.1 vs 0.2, 0.3 -> 2/4;
    # class 2: positive 0.4 vs 0.1, 0.1, 0.3 -> 1. Macro: (1 + 0.5 + 1) / 3.
    assert _auc(probabilities, labels, multi_label=False) == pytest.approx(2.5 / 3)


def test_binary_auc_is_that_of_class_one():
    probabilities = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    labels = torch.tensor([[0], [1], [0], [1]])
    # Class 1 scores 0.6, 0.8 (positives) vs 0.1, 0.7: 0.6 beats 0.1 only, 0.8 beats both -> 3/4 (not a macro
    # over both columns, which for two classes would count the same ranking twice).
    assert _auc(probabilities, labels, multi_label=False) == 0.75


def test_multi_label_auc_is_the_mean_over_labels_with_both_values():
    probabilities = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.8, 0.6], [0.6, 0.3, 0.7], [0.4, 0.1, 0.8]])
    labels = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 0, 1], [0, 1, 1]])
    # label 0: positives 0.9, 0.6 vs 0.1, 0.4 -> 1; label 1: positives 0.8, 0.1 vs 0.2, 0.3 -> 2/4;
    # label 2 has no negative: left out of the mean. Macro (1 + 0.5) / 2.
    assert _auc(probabilities, labels, multi_label=True) == pytest.approx(0.75)


# --- the classification kind ------------------------------------------------------------------


def _bright_or_dark(n: int, seed: int, channels: int = 1) -> ClassificationSplit:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n, 1), generator=generator)
    noise = torch.randint(0, 60, (n, channels, 12, 12), generator=generator)
    images = (noise + 120 * labels[:, :, None, None]).to(torch.uint8)
    return ClassificationSplit(images, labels, tuple(f"{seed}_{i}" for i in range(n)))


def easy_data(flip_test: bool = False) -> ClassificationData:
    test = _bright_or_dark(32, 3)
    if flip_test:
        test = ClassificationSplit(test.images, 1 - test.labels, test.ids)
    return ClassificationData(_bright_or_dark(64, 1), _bright_or_dark(16, 2), test)


class BrightOrDark(Task):
    name = "bright-or-dark"
    description = "bright or dark noise"
    kind = "classification"
    classes = 2
    modality = "synthetic"
    channels = 1
    target = "brightness"

    def load(self, data_root):
        return easy_data()


def calibrated_encoder(data: ClassificationData, size: int = 16) -> nn.Module:
    """A random encoder whose batch-norm statistics match the data, as a pretrained one's would: with its
    initial statistics (mean 0, variance 1) the frozen encoder's features all but vanish."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = create_encoder("vgg16_bn_tiny", 1)
    for module in encoder.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a cumulative average over the calibration pass
    encoder.train()
    with torch.no_grad():
        encoder(normalize(nn.functional.interpolate(data.train.images.float() / 255, size=size)))
    return encoder.eval()


def context(
    data: ClassificationData,
    seed: int,
    settings: SupervisedSettings,
    *,
    encoder: nn.Module | None = None,
    start: dict[str, torch.Tensor] | None = None,
    label_fraction: float = 1.0,
    split_seed: int = 0,
) -> Context:
    return Context(
        encoder=encoder if encoder is not None else calibrated_encoder(data, settings.image_size),
        data=data,
        task=BrightOrDark(),
        settings=settings,
        label_fraction=label_fraction,
        generator=torch.Generator().manual_seed(seed),
        device=CPU,
        pretrained=True,
        start=start,
        split_seed=split_seed,
    )


def test_classification_kind_takes_the_labelled_subset_and_the_official_splits():
    data = easy_data()
    kind = ClassificationProblem(
        data,
        SupervisedSettings(16, 1, 8),
        label_fraction=0.29,
        subset_seed=None,
        classes=2,
        multi_label=False,
        device=CPU,
    )
    # floor(0.29 * 64) = 18 (0.29 * 64 = 18.56): without a seed (a released order), the first 18 training images;
    # validation is the official split.
    assert kind.train[2] == data.train.ids[:18] and kind.train_size == 18
    assert kind.val[2] == data.val.ids and kind.test[2] == data.test.ids
    assert kind.train[0].shape == (18, 1, 16, 16) and kind.val_loss_name == "cross_entropy"
    capped = ClassificationProblem(
        data,
        SupervisedSettings(12, 1, 8, max_train_images=10),
        label_fraction=1.0,
        subset_seed=None,
        classes=3,
        multi_label=True,
        device=CPU,
    )
    assert capped.train[2] == data.train.ids[:10] and capped.val_loss_name == "binary_cross_entropy"
    assert torch.equal(capped.train[0], data.train.images[:10].float() / 255)  # no resize at the data's own size


def sorted_by_label() -> ClassificationData:
    """12 bright images (class 1) then 4 dark ones (class 0): a training list sorted by label, as PneumoniaMNIST's."""
    labels = torch.tensor([[1]] * 12 + [[0]] * 4)
    images = (40 + 150 * labels[:, :, None, None]).expand(16, 1, 16, 16).to(torch.uint8)
    train = ClassificationSplit(images.contiguous(), labels, tuple(f"train_{i}" for i in range(16)))
    return ClassificationData(train, _bright_or_dark(8, 2), _bright_or_dark(8, 3))


@pytest.mark.parametrize("seed", [0, 1])
def test_a_sorted_training_list_labels_both_classes_in_proportion(seed: int):
    data = sorted_by_label()

    def class_counts(settings: SupervisedSettings, label_fraction: float) -> list[int]:
        kind = supervised_problem(context(data, 0, settings, label_fraction=label_fraction, split_seed=seed))
        return torch.bincount(kind.train[1][:, 0], minlength=2).tolist()

    # A quarter of the list is class 0: so is a quarter of half of it (8 images), and of 4 under an image cap.
    # The list's prefix would hold class 1 alone.
    assert class_counts(SupervisedSettings(16, 1, 8), 0.5) == [2, 6]
    assert class_counts(SupervisedSettings(16, 1, 8, max_train_images=4), 1.0) == [1, 3]


def test_the_heads_batch_norm_ends_with_the_statistics_of_the_training_features():
    # Each training image is one grey level, so that flips change nothing; a batch of 16 holds the whole training
    # list: every epoch sees the same features, whose mean and (unbiased) variance the statistics must end at.
    generator = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (16, 1, 1, 1), generator=generator)
    labels = torch.randint(0, 2, (16, 1), generator=generator)
    train = ClassificationSplit(levels.expand(16, 1, 16, 16).to(torch.uint8), labels, tuple(map(str, range(16))))
    data = ClassificationData(train, _bright_or_dark(8, 2), _bright_or_dark(8, 3))
    encoder = calibrated_encoder(easy_data(), 16)
    outcome = LinearProbe().run(context(data, 0, SupervisedSettings(16, 3, 16), encoder=encoder))
    with torch.no_grad():
        features = encoder(normalize(train.images.float() / 255))[-1].mean(dim=(2, 3))
    torch.testing.assert_close(outcome.state["head.0.running_mean"], features.mean(dim=0))
    torch.testing.assert_close(outcome.state["head.0.running_var"], features.var(dim=0))


class BandBrightness(nn.Module):
    """Logits read off the image: the mean of row band ``k`` (of the normalised input) is logit ``k``."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.encoder = nn.Identity()
        self.outputs = outputs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([band.mean(dim=(1, 2, 3)) for band in images.chunk(self.outputs, dim=2)], dim=1)


def test_multi_label_scores_against_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    n, labels_per_image = 40, 3
    labels = torch.randint(0, 2, (n, labels_per_image), generator=generator)
    # Band k of an image (rows 4k to 4k + 3) is brighter if label k: its level overlaps that of the other label.
    levels = torch.randint(60, 160, (n, labels_per_image), generator=generator) + 40 * labels
    noise = torch.randint(0, 10, (n, 1, 12, 12), generator=generator)
    images = noise + levels.repeat_interleave(4, dim=1)[:, None, :, None]
    split = ClassificationSplit(images.clamp(0, 255).to(torch.uint8), labels, tuple(str(i) for i in range(n)))
    data = ClassificationData(split, split, split)
    kind = ClassificationProblem(
        data,
        SupervisedSettings(12, 1, 8),
        label_fraction=1.0,
        subset_seed=0,
        classes=3,
        multi_label=True,
        device=CPU,
    )
    scores = kind.score(BandBrightness(labels_per_image))
    logits = torch.stack([band.mean(dim=(1, 2, 3)) for band in ((split.images.float() / 255 - 0.5) / 0.5).chunk(3, 2)])
    # A label is predicted where sigmoid(logit) > 0.5, i.e. logit > 0; accuracy per image is the mean over labels.
    correct = ((logits.T > 0).long() == labels).float().mean(dim=1)
    assert scores["acc"].per_image == pytest.approx(correct.tolist()) and scores["acc"].ids == split.ids
    assert 0.2 < correct.mean() < 0.95  # neither all right nor all wrong: the comparison says something
    auc = sum(pair_counting_auc(logits[k], labels[:, k] == 1) for k in range(3)) / 3
    assert scores["auc"].value == pytest.approx(auc)


def _linear_probe_then_finetune(data: ClassificationData, seed: int) -> dict[str, Outcome]:
    probe = LinearProbe().run(context(data, seed, SupervisedSettings(16, 8, 16, lr=0.01)))
    settings = FinetuneSettings.after(SupervisedSettings(16, 2, 16, lr=0.01))
    finetune = Finetune().run(context(data, seed, settings, start=probe.state))
    return {"linear-probe": probe, "finetune": finetune}


def test_an_easy_problem_is_learnt_deterministically_and_selected_on_validation_only():
    assert Finetune().continues_from(BrightOrDark(), pretrained=True) == "linear-probe"
    first, again = _linear_probe_then_finetune(easy_data(), 0), _linear_probe_then_finetune(easy_data(), 0)
    other = _linear_probe_then_finetune(easy_data(), 1)
    probe = first["linear-probe"]
    assert probe.scores["auc"].value > 0.9 and np.mean(probe.scores["acc"].per_image) > 0.8
    assert probe.selection.val_loss_name == "cross_entropy"
    for name in first:
        assert first[name].scores == again[name].scores and first[name].selection == again[name].selection
    assert (probe.selection.val_loss, probe.scores["auc"].value) != (
        other["linear-probe"].selection.val_loss,
        other["linear-probe"].scores["auc"].value,
    )
    flipped = _linear_probe_then_finetune(easy_data(flip_test=True), 0)
    assert [o.selection for o in flipped.values()] == [o.selection for o in first.values()]
    assert flipped["linear-probe"].scores["auc"].value == pytest.approx(1 - probe.scores["auc"].value)


def test_classification_leaves_the_global_rng_and_the_callers_encoder_alone():
    data = easy_data()
    torch.manual_seed(5)
    encoder = create_encoder("vgg16_bn_tiny", 1)
    original = {k: v.clone() for k, v in encoder.state_dict().items()}
    state = torch.get_rng_state()
    supervised_transfer(context(data, 0, SupervisedSettings(16, 1, 16), encoder=encoder), train_encoder=True)
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in original.items())


@pytest.mark.parametrize("name", ["vgg16_bn_tiny", "vit_tiny_patch16_224"])
def test_classifier_is_a_linear_head_on_the_pooled_deepest_feature(name: str):
    encoder = create_encoder(name, 1).eval()
    model = Classifier(encoder, 3).eval()
    images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled = encoder(images)[-1].mean(dim=(2, 3))
        batch_norm, linear = model.head
        # Eval-mode batch norm without affine parameters, from its running statistics (0 and 1 at init).
        standardised = (pooled - batch_norm.running_mean) / torch.sqrt(batch_norm.running_var + batch_norm.eps)
        torch.testing.assert_close(model(images), standardised @ linear.weight.T + linear.bias)


# --- MedMNIST files ---------------------------------------------------------------------------


def _write_npz(path, channels: int, labels_per_image: int = 1, **overrides) -> None:
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        shape = (n, 28, 28) if channels == 1 else (n, 28, 28, channels)
        arrays[f"{split}_images"] = np.arange(np.prod(shape)).reshape(shape).astype(np.uint8)
        arrays[f"{split}_labels"] = np.arange(n * labels_per_image).reshape(n, labels_per_image) % 2
    np.savez(path, **{**arrays, **overrides})


def test_medmnist_reads_an_npz_in_the_release_layout(tmp_path):
    task = get_registry().task("dermamnist")
    (tmp_path / "MedMNIST").mkdir()
    assert not task.availability(tmp_path).ok and "dermamnist.npz" in task.availability(tmp_path).reason
    _write_npz(tmp_path / "MedMNIST" / "dermamnist.npz", channels=3)
    data = task.load(tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 3)
    assert data.train.images.shape == (6, 3, 28, 28)
    # Channels-last in the file: pixel (row 0, col 1) of image 0 holds values 3, 4, 5 for R, G, B.
    assert data.train.images[0, :, 0, 1].tolist() == [3, 4, 5]
    assert data.test.labels.tolist() == [[0], [1], [0]]


def test_medmnist_names_a_broken_file(tmp_path):
    _write_npz(tmp_path / "breastmnist.npz", channels=3)  # breastmnist is grey: 3 channels are wrong
    with pytest.raises(DataError, match=r"breastmnist\.npz.*1 channel"):
        get_registry().task("breastmnist").load(tmp_path)
    (tmp_path / "breastmnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"breastmnist\.npz is not a readable MedMNIST file"):
        get_registry().task("breastmnist").load(tmp_path)


def test_real_pneumoniamnist_runs_end_to_end_with_auc_headline(tmp_path):
    data_root = shared_data("MedMNIST").parent
    data = get_registry().task("pneumoniamnist").load(data_root)
    assert (len(data.train), len(data.val), len(data.test)) == (3882, 524, 624)
    values = {
        "methods": {"scratch": {}},
        "tasks": ["pneumoniamnist"],
        "protocols": ["linear-probe", "finetune"],
        "data_root": str(data_root),
    }
    config = resolve_config(values, {"results": str(tmp_path)}, get_registry())
    Engine(config, torch.device("cpu"), progress=False, echo=lambda line: None).run(build_plan(config, get_registry()))
    results = {}
    for path in tmp_path.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        results[result["protocol"]["name"]] = result
    assert set(results) == {"linear-probe", "finetune"}
    for result in results.values():
        assert result["headline_metric"] == "auc" and result["pool"] is None and not result["pretrained"]
        assert 0 <= result["metrics"]["auc"]["value"] <= 1 and len(result["metrics"]["acc"]["per_image"]) == 624
        assert result["selection"]["val_loss_name"] == "cross_entropy"
    # Without pretraining, fine-tuning is the released scratch baseline: end to end once, from no other job.
    assert results["finetune"]["protocol"]["continued_from"] is None
    assert (
        results["linear-probe"]["protocol"]["frozen_encoder"] and not results["finetune"]["protocol"]["frozen_encoder"]
    )


def test_a_last_batch_of_one_image_joins_the_batch_before():
    # 33 labelled images in batches of 16 leave one: BatchNorm1d cannot take a batch of one in training mode.
    data = ClassificationData(_bright_or_dark(33, 1), _bright_or_dark(8, 2), _bright_or_dark(8, 3))
    outcome = LinearProbe().run(context(data, 0, SupervisedSettings(image_size=16, epochs=1, batch_size=16)))
    assert len(outcome.scores["acc"].per_image) == 8


@pytest.mark.parametrize(("fraction", "message"), [(0.01, "keeps 0; at least 2"), (1.5, "must be in \\(0, 1\\]")])
def test_a_label_fraction_that_leaves_too_few_images_is_refused(fraction, message):
    from ssl_bench.errors import ConfigError

    settings = SupervisedSettings(image_size=16, epochs=1, batch_size=16)
    with pytest.raises(ConfigError, match=message):
        LinearProbe().run(context(easy_data(), 0, settings, label_fraction=fraction))
