"""Classification protocol and the MedMNIST task: AUC by hand, an easy problem learnt, files read strictly."""

import json

import numpy as np
import pytest
import torch
from conftest import shared_data

from ssl_bench.augment import normalize
from ssl_bench.classify import ClassificationProtocol, _auc, roc_auc, run_classification
from ssl_bench.config import resolve_config
from ssl_bench.errors import DataError
from ssl_bench.models import create_encoder
from ssl_bench.plugins import get_registry
from ssl_bench.runner import Executor, build_plan
from ssl_bench.task import ClassificationData, ClassificationSplit


def test_roc_auc_against_pair_counting():
    # Positives 0.35, 0.8 against negatives 0.1, 0.4: pairs won 1+1 (0.35) and 1+1 (0.8) minus the
    # 0.35 < 0.4 loss -> 3 of 4 pairs.
    assert roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([False, False, True, True])) == 0.75
    assert roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([False, True])) == 0.5  # a tie counts one half
    assert np.isnan(roc_auc(torch.tensor([0.2, 0.3]), torch.tensor([True, True])))


def test_macro_auc_one_vs_rest():
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.6, 0.1, 0.3]])
    labels = torch.tensor([[0], [1], [2], [1]])
    # class 0: positive 0.7 vs negatives 0.2, 0.3, 0.6 -> 1; class 1: positives 0.7, 0.1 vs 0.2, 0.3 -> 2/4;
    # class 2: positive 0.4 vs 0.1, 0.1, 0.3 -> 1. Macro: (1 + 0.5 + 1) / 3.
    assert _auc(probabilities, labels, multi_label=False) == pytest.approx(2.5 / 3)


def _bright_or_dark(n: int, seed: int, channels: int = 1) -> ClassificationSplit:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n, 1), generator=generator)
    noise = torch.randint(0, 60, (n, channels, 12, 12), generator=generator)
    images = (noise + 120 * labels[:, :, None, None]).to(torch.uint8)
    return ClassificationSplit(images, labels, tuple(str(i) for i in range(n)))


def _easy_data(flip_test: bool = False) -> ClassificationData:
    test = _bright_or_dark(32, 3)
    if flip_test:
        test = ClassificationSplit(test.images, 1 - test.labels, test.ids)
    return ClassificationData(_bright_or_dark(64, 1), _bright_or_dark(16, 2), test)


def _encoder_with_calibrated_statistics(data: ClassificationData) -> torch.nn.Module:
    """A random encoder whose batch-norm statistics match the data, as a pretrained one's would: with its
    initial statistics (mean 0, variance 1) the frozen encoder's features all but vanish."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = create_encoder("vgg16_bn_tiny", 1)
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average over the calibration pass
    encoder.train()
    with torch.no_grad():
        encoder(normalize(torch.nn.functional.interpolate(data.train.images.float() / 255, size=16)))
    return encoder.eval()


def _classify(data: ClassificationData, seed: int):
    protocol = ClassificationProtocol(image_size=16, frozen_epochs=8, finetune_epochs=2, batch_size=16, lr=0.01)
    return run_classification(
        _encoder_with_calibrated_statistics(data),
        data,
        protocol,
        classes=2,
        multi_label=False,
        label_fraction=1.0,
        generator=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        progress=False,
    )


def test_an_easy_problem_is_learnt_deterministically_and_selected_on_validation_only():
    first, again, other = _classify(_easy_data(), 0), _classify(_easy_data(), 0), _classify(_easy_data(), 1)
    assert first["frozen"].auc > 0.9 and np.mean(first["frozen"].correct) > 0.8
    assert first["finetune"].correct == again["finetune"].correct and first["finetune"].auc == again["finetune"].auc
    assert (first["frozen"].best_val_loss, first["frozen"].auc) != (other["frozen"].best_val_loss, other["frozen"].auc)
    flipped = _classify(_easy_data(flip_test=True), 0)
    assert [r.best_epoch for r in flipped.values()] == [r.best_epoch for r in first.values()]
    assert flipped["frozen"].auc == pytest.approx(1 - first["frozen"].auc)


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
    values = {"methods": {"scratch": {}}, "tasks": ["pneumoniamnist"], "data_root": str(data_root)}
    config = resolve_config(values, {"results": str(tmp_path)}, get_registry())
    Executor(config, torch.device("cpu"), progress=False, echo=lambda line: None).run(
        build_plan(config, get_registry())
    )
    (path,) = tmp_path.glob("runs/*/result.json")
    result = json.loads(path.read_text())
    assert result["headline_metric"] == "auc" and result["pool"] is None
    frozen = result["metrics"]["frozen"]
    assert 0 <= frozen["auc"]["value"] <= 1 and len(frozen["acc"]["per_image"]) == 624
