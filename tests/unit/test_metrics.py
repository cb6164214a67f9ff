import pytest
import torch

from ssl_bench.metrics import dice_per_image, iou_per_image, soft_dice_from_sums, soft_dice_loss

# Image 0: predicted {(0,0), (0,1), (1,1)} (0.5 counts as foreground), label {(0,0), (1,1)}: overlap 2.
# Image 1: predicted {(1,0)}, label {(0,1), (1,0), (1,1)}: overlap 1.
PROBS = torch.tensor([[[0.9, 0.6], [0.2, 0.5]], [[0.1, 0.49], [0.7, 0.0]]])
LABELS = torch.tensor([[[1, 0], [0, 1]], [[0, 1], [1, 1]]], dtype=torch.bool)


def test_dice_per_image_on_hand_counted_masks() -> None:
    dice = dice_per_image(PROBS, LABELS)
    assert dice.shape == (2,)
    torch.testing.assert_close(dice, torch.tensor([2 * 2 / (3 + 2), 2 * 1 / (1 + 3)]))


def test_iou_per_image_on_hand_counted_masks() -> None:
    torch.testing.assert_close(iou_per_image(PROBS, LABELS), torch.tensor([2 / 3, 1 / 3]))


def test_threshold_is_inclusive_and_configurable() -> None:
    probs = torch.tensor([[0.5, 0.3]])
    label = torch.tensor([[1.0, 0.0]])
    assert dice_per_image(probs, label).item() == 1.0
    # At 0.3 both pixels are predicted: 2*1/(2+1).
    assert dice_per_image(probs, label, threshold=0.3).item() == pytest.approx(2 / 3)
    assert iou_per_image(probs, label, threshold=0.3).item() == pytest.approx(1 / 2)
    assert dice_per_image(probs, label, threshold=0.6).item() == 0.0


def test_empty_prediction_of_empty_label_scores_one() -> None:
    probs = torch.tensor([[[0.1, 0.2]], [[0.1, 0.2]], [[0.9, 0.2]]])
    labels = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 0.0]]])
    torch.testing.assert_close(dice_per_image(probs, labels), torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(iou_per_image(probs, labels), torch.tensor([1.0, 0.0, 0.0]))


def test_metrics_accept_channel_dimension_and_reject_mismatched_shapes() -> None:
    dice = dice_per_image(PROBS.unsqueeze(1), LABELS.unsqueeze(1).float())
    torch.testing.assert_close(dice, torch.tensor([4 / 5, 2 / 4]))
    with pytest.raises(ValueError, match="shape"):
        dice_per_image(PROBS, LABELS[:, :1])


def test_soft_dice_loss_is_batch_global() -> None:
    probs = torch.tensor([[0.5, 1.0], [0.0, 0.25]])
    labels = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # sum(y p) = 1.5, sum y = 2, sum p = 1.75.
    assert soft_dice_loss(probs, labels).item() == pytest.approx(-2 * 1.5 / (2 + 1.75 + 1))
    # Per-image mean would differ: image 1 alone scores 0, image 0 alone -3/4.5.
    assert soft_dice_loss(probs, labels).item() != pytest.approx((-3 / 4.5 + 0) / 2)


def test_soft_dice_loss_is_negative_and_near_minus_one_when_perfect() -> None:
    ones = torch.ones(2, 1, 10, 5)
    assert soft_dice_loss(ones, ones).item() == pytest.approx(-200 / 201)
    assert soft_dice_loss(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0
    assert soft_dice_loss(torch.ones(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_soft_dice_loss_gradient_matches_the_formula() -> None:
    probs = torch.tensor([0.5, 1.0, 0.0, 0.25], requires_grad=True)
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0])
    soft_dice_loss(probs, labels).backward()
    # d/dp_i of -2S/D with S = 1.5, D = 4.75: -2 y_i / D + 2 S / D^2.
    expected = torch.tensor([-2 / 4.75 + 3 / 4.75**2] * 2 + [3 / 4.75**2] * 2)
    torch.testing.assert_close(probs.grad, expected)


def test_soft_dice_from_sums_matches_the_loss_on_concatenated_batches() -> None:
    torch.manual_seed(0)
    probs, labels = torch.rand(6, 8, 8), (torch.rand(6, 8, 8) > 0.5).float()
    parts = [(p * y).sum() for p, y in zip(probs.split(4), labels.split(4), strict=True)]
    loss = soft_dice_from_sums(sum(parts), labels.sum(), probs.sum())
    torch.testing.assert_close(loss, soft_dice_loss(probs, labels))
