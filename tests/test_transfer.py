import math

import pytest
import torch

from ssl_bench import transfer
from ssl_bench.models import create_encoder
from ssl_bench.task import SegmentationData, SegmentationSplit
from ssl_bench.transfer import (
    TransferProtocol,
    TransferResult,
    build_segmentation_model,
    resize_split,
    run_transfer,
    split_train_val,
    train_regime,
)

CPU = torch.device("cpu")


def squares(n: int, size: int, seed: int, channels: int = 1) -> SegmentationSplit:
    """Bright squares of random size and place on a noisy dark background; the mask is the square."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        side = int(torch.randint(size // 4, size // 2, (1,), generator=generator))
        top, left = (int(v) for v in torch.randint(0, size - side, (2,), generator=generator))
        masks[i, top : top + side, left : left + side] = True
    noise = torch.randint(0, 40, (n, channels, size, size), generator=generator)
    images = (40 + noise + 150 * masks.unsqueeze(1)).to(torch.uint8)
    return SegmentationSplit(images, masks, tuple(f"case{seed}_{i}" for i in range(n)))


def squares_task(channels: int = 1, size: int = 32, n_train: int = 12) -> SegmentationData:
    return SegmentationData(squares(n_train, size, 0, channels), squares(6, size, 1, channels))


def run_squares(data: SegmentationData, seed: int, epochs: int = 2, channels: int = 1) -> TransferResult:
    protocol = TransferProtocol(image_size=32, frozen_epochs=epochs, finetune_epochs=epochs, batch_size=4)
    torch.manual_seed(123)  # the encoder is the same in every call; the generator drives everything else
    return run_transfer(
        create_encoder(in_chans=channels),
        data,
        protocol,
        label_fraction=1.0,
        rotation_degrees=30.0,
        generator=torch.Generator().manual_seed(seed),
        device=CPU,
        progress=False,
    )


@pytest.mark.parametrize(
    ("n", "fraction", "train", "val"),
    [
        (20, 1.0, range(4, 20), range(0, 4)),
        (10, 0.2, range(1, 2), range(0, 1)),  # prefix 2, floor(0.4) = 0 -> 1 validation row
        (10, 0.6, range(1, 6), range(0, 1)),
        (100, 0.29, range(5, 29), range(0, 5)),  # 0.29 * 100 is 28.999... in floats
        (37, 0.8, range(5, 29), range(0, 5)),  # prefix floor(29.6) = 29, val floor(5.8) = 5
    ],
)
def test_split_train_val_follows_the_ld_rule(n: int, fraction: float, train: range, val: range) -> None:
    assert split_train_val(n, fraction) == (train, val)


@pytest.mark.parametrize(("n", "fraction"), [(10, 0.1), (1, 1.0), (0, 1.0)])
def test_split_train_val_needs_one_training_and_one_validation_row(n: int, fraction: float) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        split_train_val(n, fraction)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_split_train_val_rejects_fractions_outside_0_1(fraction: float) -> None:
    with pytest.raises(ValueError, match="label_fraction"):
        split_train_val(10, fraction)


def test_protocol_profiles() -> None:
    assert TransferProtocol.for_profile("paper") == TransferProtocol(512, 100, 100, 2, 1e-3)
    demo = TransferProtocol.for_profile("demo")
    assert demo.image_size <= 128 and demo.frozen_epochs + demo.finetune_epochs <= 30
    with pytest.raises(ValueError, match="'demo', 'paper' or 'matched'"):
        TransferProtocol.for_profile("huge")
    with pytest.raises(ValueError, match="frozen_epochs"):
        TransferProtocol(32, 0, 1, 2)


def test_resize_split_keeps_uint8_images_and_binary_masks() -> None:
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 8:24, 16:48] = True
    images = torch.full((1, 3, 64, 64), 77, dtype=torch.uint8)
    resized = resize_split(SegmentationSplit(images, masks, ("a",)), 32, CPU)
    expected = torch.zeros(1, 32, 32, dtype=torch.bool)
    expected[0, 4:12, 8:24] = True
    assert torch.equal(resized.masks, expected)
    assert resized.images.dtype == torch.uint8 and torch.all(resized.images == 77)
    assert resized.images.shape == (1, 3, 32, 32) and resized.ids == ("a",)


def test_run_transfer_is_deterministic_given_the_generator() -> None:
    data = squares_task(channels=3)
    first = run_squares(data, seed=0, channels=3)
    second = run_squares(data, seed=0, channels=3)
    other = run_squares(data, seed=1, channels=3)
    for regime in ("frozen", "finetune"):
        a, b, c = first.regimes[regime], second.regimes[regime], other.regimes[regime]
        assert (a.dice, a.iou, a.best_epoch, a.best_val_loss) == (b.dice, b.iou, b.best_epoch, b.best_val_loss)
        assert a.dice != c.dice and a.best_val_loss != c.best_val_loss
    assert set(first.regimes) == {"frozen", "finetune"}


def test_run_transfer_does_not_touch_the_global_rng_or_the_callers_encoder() -> None:
    data = squares_task()
    torch.manual_seed(5)
    encoder = create_encoder(in_chans=1)
    original = {k: v.clone() for k, v in encoder.state_dict().items()}
    state = torch.get_rng_state()
    run_transfer(
        encoder,
        data,
        TransferProtocol(32, 1, 1, 4),
        label_fraction=1.0,
        rotation_degrees=180.0,
        generator=torch.Generator().manual_seed(0),
        device=CPU,
        progress=False,
    )
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in original.items())


def test_decoder_init_comes_from_the_generator() -> None:
    encoder = create_encoder(in_chans=1)

    def head_weight(seed: int) -> torch.Tensor:
        model = build_segmentation_model(encoder, torch.Generator().manual_seed(seed))
        assert model.encoder is not encoder
        return model.head[-1].weight

    assert torch.equal(head_weight(0), head_weight(0))
    assert not torch.equal(head_weight(0), head_weight(1))


def _fit(model, data: SegmentationData, epochs: int = 2):
    train = resize_split(data.train.subset(slice(2, None)), 32, CPU)
    val = resize_split(data.train.subset(slice(0, 2)), 32, CPU)
    kwargs = {"batch_size": 4, "lr": 1e-3, "rotation_degrees": 30.0}
    return train_regime(model, train, val, epochs=epochs, generator=torch.Generator().manual_seed(0), **kwargs)


def test_frozen_regime_keeps_the_encoder_and_finetune_changes_it() -> None:
    data = squares_task()
    model = build_segmentation_model(create_encoder(in_chans=1), torch.Generator().manual_seed(0))
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = model.head[-1].weight.clone()
    model.set_encoder_frozen(True)
    _fit(model, data)
    # Weights and BatchNorm running statistics alike: the encoder ran in eval mode.
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert not torch.equal(head_before, model.head[-1].weight)
    model.set_encoder_frozen(False)
    _fit(model, data)
    after = model.encoder.state_dict()
    changed = [k for k, v in encoder_before.items() if not torch.equal(v, after[k])]
    assert any(k.endswith("weight") for k in changed) and any(k.endswith("running_mean") for k in changed)


def test_train_regime_keeps_the_epoch_with_the_lowest_validation_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted = iter([-0.1, -0.5, -0.5, -0.3])  # epoch 2 is best; epoch 3 ties and must not replace it
    snapshots = []

    def fake_validation_loss(model, val) -> float:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(transfer, "validation_loss", fake_validation_loss)
    model = build_segmentation_model(create_encoder(in_chans=1), torch.Generator().manual_seed(0))
    fit = _fit(model, squares_task(), epochs=4)
    assert (fit.best_epoch, fit.best_val_loss) == (2, -0.5)
    assert all(torch.equal(v, snapshots[1][k]) for k, v in fit.best_state.items())
    assert not all(torch.equal(v, snapshots[3][k]) for k, v in fit.best_state.items())
    assert fit.seconds > 0 and fit.train_images_per_second > 0


def test_validation_loss_is_global_over_the_validation_split() -> None:
    val = resize_split(squares(20, 16, 3), 16, CPU)  # more rows than one evaluation batch
    model = build_segmentation_model(create_encoder(in_chans=1), torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        probs = torch.sigmoid(model((val.images.float() / 255 - 0.5) / 0.5))
    targets = val.masks.unsqueeze(1).float()
    reference = -2 * (probs * targets).sum() / (targets.sum() + probs.sum() + 1)
    assert transfer.validation_loss(model, val) == pytest.approx(reference.item(), rel=1e-5)


def test_model_selection_never_looks_at_test_labels() -> None:
    data = squares_task()
    inverted = SegmentationData(data.train, SegmentationSplit(data.test.images, ~data.test.masks, data.test.ids))
    normal, flipped = run_squares(data, seed=0, epochs=3), run_squares(inverted, seed=0, epochs=3)
    for regime in ("frozen", "finetune"):
        a, b = normal.regimes[regime], flipped.regimes[regime]
        assert (a.best_epoch, a.best_val_loss) == (b.best_epoch, b.best_val_loss)
        assert a.dice != b.dice


def test_short_run_beats_the_all_foreground_baseline_on_squares() -> None:
    data = squares_task(n_train=24)
    result = run_squares(data, seed=0, epochs=6)
    labels = data.test.masks.flatten(1).float()
    # Predicting everything: Dice = 2|T| / (|T| + H W) per image.
    baseline = (2 * labels.sum(1) / (labels.sum(1) + labels.shape[1])).mean().item()
    assert baseline < 0.3
    frozen, finetune = result.regimes["frozen"], result.regimes["finetune"]
    assert finetune.ids == list(data.test.ids) and len(finetune.dice) == len(finetune.iou) == 6
    assert all(0 <= d <= 1 and math.isfinite(d) for d in finetune.dice + frozen.dice)
    assert sum(frozen.dice) / 6 > baseline + 0.2
    assert sum(finetune.dice) / 6 > max(0.8, baseline + 0.3)
    assert all(i <= d for i, d in zip(finetune.iou, finetune.dice, strict=True))  # IoU <= Dice always
