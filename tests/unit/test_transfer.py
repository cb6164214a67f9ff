"""Segmentation as a downstream task kind: LD's split, resizing, flips per task, selection, global validation Dice."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from ssl_bench_protocols.finetune import Finetune, FinetuneSettings
from ssl_bench_protocols.frozen import Frozen

from ssl_bench.augment import random_flip_rotate
from ssl_bench.errors import ConfigError
from ssl_bench.models import SegmentationModel, create_encoder
from ssl_bench.protocol import Context, Outcome, Selection
from ssl_bench.supervised import segmentation
from ssl_bench.supervised.labelled import labelled_rows
from ssl_bench.supervised.loop import SupervisedSettings, fit, fresh_model
from ssl_bench.supervised.protocol import supervised_problem, supervised_transfer
from ssl_bench.supervised.segmentation import SegmentationProblem, resize_split, split_train_val
from ssl_bench.task import SegmentationData, SegmentationSplit, Task

CPU = torch.device("cpu")
SETTINGS = SupervisedSettings(image_size=32, epochs=2, batch_size=4)


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


def squares_data(channels: int = 1, size: int = 32, n_train: int = 12) -> SegmentationData:
    return SegmentationData(squares(n_train, size, 0, channels), squares(6, size, 1, channels))


class Squares(Task):
    """A segmentation task on :func:`squares`; flips and rotation set per instance, as folder tasks do."""

    name = "squares"
    description = "bright squares on a noisy background"
    modality = "synthetic"
    target = "squares"

    def __init__(self, channels: int = 1, flips: bool = True, rotation_degrees: float = 30.0) -> None:
        self.channels, self.flips, self.rotation_degrees = channels, flips, rotation_degrees

    def load(self, data_root):
        return squares_data(self.channels)


def encoder(channels: int = 1) -> torch.nn.Module:
    """The same random encoder on every call, without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        return create_encoder(in_chans=channels)


def context(
    data: SegmentationData,
    seed: int,
    *,
    task: Task | None = None,
    settings: SupervisedSettings = SETTINGS,
    label_fraction: float = 1.0,
    start: dict[str, torch.Tensor] | None = None,
    pretrained: bool = True,
    enc: torch.nn.Module | None = None,
) -> Context:
    task = task or Squares(channels=data.train.images.shape[1])
    return Context(
        encoder=enc if enc is not None else encoder(task.channels),
        data=data,
        task=task,
        settings=settings,
        label_fraction=label_fraction,
        generator=torch.Generator().manual_seed(seed),
        device=CPU,
        pretrained=pretrained,
        start=start,
    )


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())


def mean_dice(outcome: Outcome) -> float:
    dice = outcome.scores["dice"].per_image
    return sum(dice) / len(dice)


# --- LD's split and resizing ------------------------------------------------------------------


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
def test_an_ordered_list_is_split_by_the_ld_rule(n: int, fraction: float, train: range, val: range) -> None:
    train_rows, val_rows = split_train_val(labelled_rows(n, fraction, seed=None))
    assert (train_rows.tolist(), val_rows.tolist()) == (list(train), list(val))


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


def segmentation_problem(data: SegmentationData, label_fraction: float, subset_seed: int | None) -> SegmentationProblem:
    return SegmentationProblem(
        data,
        SETTINGS,
        label_fraction=label_fraction,
        subset_seed=subset_seed,
        flips=True,
        rotation_degrees=30.0,
        device=CPU,
    )


def test_segmentation_kind_splits_the_labelled_prefix_of_an_ordered_list_as_ld_and_resizes() -> None:
    data = SegmentationData(squares(12, 48, 0), squares(3, 48, 1))
    kind = segmentation_problem(data, 0.5, subset_seed=None)
    ids = data.train.ids
    # Prefix floor(0.5 * 12) = 6 rows; validation max(1, floor(0.2 * 6)) = 1 row, training the other 5.
    assert kind.val.ids == ids[:1] and kind.train.ids == ids[1:6] and kind.train_size == 5
    assert kind.test.ids == data.test.ids
    for split in (kind.train, kind.val, kind.test):
        assert split.images.shape[-2:] == (32, 32) and split.masks.shape[-2:] == (32, 32)
    with pytest.raises(ConfigError, match="at least 2"):
        segmentation_problem(data, 0.1, subset_seed=None)


def labelled_ids(kind: SegmentationProblem) -> tuple[str, ...]:
    """The labelled images of ``kind`` in the order drawn: validation first."""
    return kind.val.ids + kind.train.ids


def test_an_unordered_task_trains_and_validates_on_a_seeded_draw() -> None:
    data = SegmentationData(squares(12, 48, 0), squares(3, 48, 1))
    draws = {seed: segmentation_problem(data, 0.5, subset_seed=seed) for seed in range(4)}
    for kind in draws.values():
        # Still 6 labelled images, 1 validating and 5 training, none twice.
        assert len(kind.val.ids) == 1 and len(kind.train.ids) == 5
        assert len(set(labelled_ids(kind))) == 6 and set(labelled_ids(kind)) <= set(data.train.ids)
    assert labelled_ids(segmentation_problem(data, 0.5, subset_seed=2)) == labelled_ids(draws[2])
    assert len({labelled_ids(kind) for kind in draws.values()}) == 4  # each seed its own draw
    assert any(labelled_ids(kind) != data.train.ids[:6] for kind in draws.values())


class OrderedSquares(Squares):
    ordered_split = True


def test_the_context_draws_from_its_split_seed_unless_the_task_keeps_its_order() -> None:
    data = SegmentationData(squares(12, 48, 0), squares(3, 48, 1))

    def labelled(task: Task, split_seed: int) -> tuple[str, ...]:
        ctx = dataclasses.replace(context(data, 0, task=task, label_fraction=0.5), split_seed=split_seed)
        return labelled_ids(supervised_problem(ctx))

    assert labelled(OrderedSquares(), 1) == labelled(OrderedSquares(), 2) == data.train.ids[:6]
    assert labelled(Squares(), 1) == labelled_ids(segmentation_problem(data, 0.5, subset_seed=1))
    assert labelled(Squares(), 1) != labelled(Squares(), 2)


# --- flips per task ---------------------------------------------------------------------------


def _asymmetric(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` copies of an image that every flip changes: a ramp plus a corner block."""
    image = torch.linspace(0, 1, 64).view(1, 1, 8, 8) * 0.5
    image[..., :2, :3] += 0.5
    mask = image > 0.5
    return image.repeat(n, 1, 1, 1), mask.float().repeat(n, 1, 1, 1)


def test_random_flip_rotate_without_flips_never_mirrors() -> None:
    images, masks = _asymmetric(200)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        out_images, out_masks = random_flip_rotate(images, masks, 0.0, generator, flips=False)
        torch.testing.assert_close(out_images, images, atol=1e-5, rtol=0)
        assert torch.equal(out_masks, masks)


def test_random_flip_rotate_with_flips_mirrors_about_half_on_each_axis() -> None:
    n = 2000
    images, masks = _asymmetric(n)
    out_images, out_masks = random_flip_rotate(images, masks, 0.0, torch.Generator().manual_seed(0), flips=True)
    image = images[0]
    candidates = {
        (False, False): image,
        (True, False): image.flip(-1),
        (False, True): image.flip(-2),
        (True, True): image.flip(-1).flip(-2),
    }
    counts = dict.fromkeys(candidates, 0)
    for out, out_mask in zip(out_images, out_masks, strict=True):
        (which,) = [key for key, c in candidates.items() if torch.allclose(out, c, atol=1e-5)]
        counts[which] += 1
        assert torch.equal(out_mask, (candidates[which] > 0.5).float())  # the mask moves with its image
    # Each axis flips with p = 0.5, independently: about half mirror left-right, half upside down, a quarter both.
    # (binomial sd at n = 2000: 0.011 for p = 0.5, 0.0097 for p = 0.25)
    assert abs((counts[True, False] + counts[True, True]) / n - 0.5) < 0.05
    assert abs((counts[False, True] + counts[True, True]) / n - 0.5) < 0.05
    assert abs(counts[True, True] / n - 0.25) < 0.05


def test_random_flip_rotate_draws_the_same_numbers_with_or_without_flips() -> None:
    images, masks = _asymmetric(16)
    with_flips, without = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    random_flip_rotate(images, masks, 30.0, with_flips, flips=True)
    random_flip_rotate(images, masks, 30.0, without, flips=False)
    assert torch.equal(with_flips.get_state(), without.get_state())


@pytest.mark.parametrize(("flips", "degrees"), [(False, 30.0), (True, 180.0)])
def test_segmentation_training_uses_the_tasks_flips_and_rotation(
    monkeypatch: pytest.MonkeyPatch, flips: bool, degrees: float
) -> None:
    calls = []

    def recording(images, masks, rotation_degrees, generator, flips=True):
        calls.append((rotation_degrees, flips))
        return random_flip_rotate(images, masks, rotation_degrees, generator, flips=flips)

    monkeypatch.setattr(segmentation, "random_flip_rotate", recording)
    task = Squares(flips=flips, rotation_degrees=degrees)
    settings = SupervisedSettings(32, 1, 4)
    ctx = context(squares_data(), 0, task=task, settings=settings)
    assert isinstance(supervised_problem(ctx), SegmentationProblem) and supervised_problem(ctx).flips is flips
    supervised_transfer(ctx, train_encoder=True)
    # 10 training images in batches of 4: 3 batches, each augmented with the task's settings.
    assert calls == [(degrees, flips)] * 3


# --- the training loop on segmentation ---------------------------------------------------------


def test_decoder_init_comes_from_the_generator() -> None:
    enc = encoder()

    def head_weight(seed: int) -> torch.Tensor:
        model = fresh_model(SegmentationModel, enc, torch.Generator().manual_seed(seed))
        assert model.encoder is not enc
        return model.head[-1].weight

    assert torch.equal(head_weight(0), head_weight(0))
    assert not torch.equal(head_weight(0), head_weight(1))


@pytest.mark.parametrize("train_encoder", [False, True])
def test_supervised_transfer_is_deterministic_given_the_generator(train_encoder: bool) -> None:
    data = squares_data(channels=3)
    first, again, other = (supervised_transfer(context(data, seed), train_encoder=train_encoder) for seed in (0, 0, 1))
    assert first.scores == again.scores and first.selection == again.selection
    assert same_state(first.state, again.state)
    assert first.scores["dice"] != other.scores["dice"] and first.selection.val_loss != other.selection.val_loss
    assert first.selection.val_loss_name == "soft_dice_loss" and first.selection.epoch in (1, 2)
    assert first.scores["dice"].ids == data.test.ids and len(first.scores["iou"].per_image) == 6


def test_supervised_transfer_leaves_the_global_rng_and_the_callers_encoder_alone() -> None:
    torch.manual_seed(5)
    enc = create_encoder(in_chans=1)
    original = {k: v.clone() for k, v in enc.state_dict().items()}
    state = torch.get_rng_state()
    task = Squares(rotation_degrees=180.0)
    supervised_transfer(context(squares_data(), 0, task=task, enc=enc), train_encoder=True)
    assert torch.equal(state, torch.get_rng_state())
    assert same_state(original, enc.state_dict())


def test_fit_keeps_the_epoch_with_the_lowest_validation_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    kind = segmentation_problem(squares_data(), 1.0, subset_seed=0)
    scripted = iter([-0.1, -0.5, -0.5, -0.3])  # epoch 2 is best; epoch 3 ties and must not replace it
    snapshots = []

    def fake_validation_loss(model) -> float:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(kind, "validation_loss", fake_validation_loss)
    model = fresh_model(kind.build_model, encoder(), torch.Generator().manual_seed(0))
    result = fit(kind, model, epochs=4, batch_size=4, lr=1e-3, train_encoder=True, generator=torch.Generator())
    assert (result.best_epoch, result.best_val_loss) == (2, -0.5)
    assert same_state(result.best_state, snapshots[1])
    assert not same_state(result.best_state, snapshots[2]) and not same_state(result.best_state, snapshots[3])
    assert same_state(model.state_dict(), snapshots[3])  # the model ends in its last epoch
    assert result.seconds > 0 and result.train_images_per_second > 0


def test_supervised_transfer_scores_the_selected_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted = iter([-0.2, -0.6, -0.4])
    snapshots = []

    def fake_validation_loss(self, model) -> float:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(SegmentationProblem, "validation_loss", fake_validation_loss)
    data = squares_data()
    outcome = supervised_transfer(context(data, 0, settings=SupervisedSettings(32, 3, 4)), train_encoder=True)
    assert outcome.selection == Selection(2, -0.6, "soft_dice_loss")
    assert same_state(outcome.state, snapshots[1])
    model = SegmentationModel(create_encoder(in_chans=1))
    model.load_state_dict(snapshots[1])
    assert outcome.scores == segmentation.score(model, resize_split(data.test, 32, CPU))


def test_validation_loss_is_global_over_the_validation_split() -> None:
    val = resize_split(squares(20, 16, 3), 16, CPU)  # more rows than one evaluation batch (16)
    model = fresh_model(SegmentationModel, encoder(), torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        probs = torch.sigmoid(model((val.images.float() / 255 - 0.5) / 0.5))
    targets = val.masks.unsqueeze(1).float()
    reference = -2 * (probs * targets).sum() / (targets.sum() + probs.sum() + 1)
    assert segmentation.validation_loss(model, val) == pytest.approx(reference.item(), rel=1e-5)
    # Not the mean of the two evaluation batches' losses, which would weigh the 4-image batch as the 16-image one.
    halves = ((probs[:16], targets[:16]), (probs[16:], targets[16:]))
    batches = [-2 * (p * t).sum() / (t.sum() + p.sum() + 1) for p, t in halves]
    assert abs(float(sum(batches)) / 2 - reference.item()) > 1e-4


def test_model_selection_never_looks_at_test_labels() -> None:
    data = squares_data()
    inverted = SegmentationData(data.train, SegmentationSplit(data.test.images, ~data.test.masks, data.test.ids))
    settings = SupervisedSettings(32, 3, 4)
    for train_encoder in (False, True):
        normal = supervised_transfer(context(data, 0, settings=settings), train_encoder=train_encoder)
        flipped = supervised_transfer(context(inverted, 0, settings=settings), train_encoder=train_encoder)
        assert normal.selection == flipped.selection and same_state(normal.state, flipped.state)
        assert normal.scores["dice"] != flipped.scores["dice"]


def test_frozen_then_finetune_beats_the_all_foreground_baseline_on_squares() -> None:
    data = squares_data(n_train=24)
    settings = SupervisedSettings(32, 6, 4)
    frozen = Frozen().run(context(data, 0, settings=settings))
    assert Finetune().continues_from(Squares(), pretrained=True) == "frozen"
    finetune = Finetune().run(context(data, 0, settings=FinetuneSettings.after(settings), start=frozen.state))
    labels = data.test.masks.flatten(1).float()
    # Predicting everything: Dice = 2|T| / (|T| + H W) per image.
    baseline = (2 * labels.sum(1) / (labels.sum(1) + labels.shape[1])).mean().item()
    assert baseline < 0.3
    dice, iou = finetune.scores["dice"].per_image, finetune.scores["iou"].per_image
    assert finetune.scores["dice"].ids == data.test.ids and len(dice) == len(iou) == 6
    assert all(0 <= d <= 1 and math.isfinite(d) for d in dice + frozen.scores["dice"].per_image)
    assert mean_dice(frozen) > baseline + 0.2
    assert mean_dice(finetune) > max(0.8, baseline + 0.3)
    assert all(i <= d for i, d in zip(iou, dice, strict=True))  # IoU <= Dice always
    assert 1 <= finetune.selection.epoch <= 6 and -1 < finetune.selection.val_loss < 0
