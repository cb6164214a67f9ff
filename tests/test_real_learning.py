"""A short scratch fine-tune at 256 px on real data learns: DRIVE vessels and the 60 CXR lungs."""

import numpy as np
import pytest
import torch
from conftest import shared_data

from ssl_bench.models import create_encoder
from ssl_bench.plugins import get_registry
from ssl_bench.transfer import TransferProtocol, run_transfer


def _scratch_finetune_dice(task_name: str, folder: str, epochs: int) -> tuple[float, float]:
    """Test Dice of a scratch encoder fine-tuned at 256 px, and that of predicting all foreground."""
    task = get_registry().task(task_name)
    data = task.load(shared_data(folder).parent)
    masks = data.test.masks.float()
    all_foreground = (2 * masks.sum((1, 2)) / (masks.sum((1, 2)) + masks[0].numel())).mean().item()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = create_encoder("vgg16_bn_tiny", task.channels)
    result = run_transfer(
        encoder,
        data,
        TransferProtocol(image_size=256, frozen_epochs=1, finetune_epochs=epochs, batch_size=4),
        label_fraction=1.0,
        rotation_degrees=task.rotation_degrees,
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
        progress=False,
    )
    return float(np.mean(result.regimes["finetune"].dice)), all_foreground


@pytest.mark.slow
def test_scratch_learns_drive_vessels_at_256_px():
    dice, all_foreground = _scratch_finetune_dice("drive-vessel", "DRIVE", epochs=30)
    assert dice >= 0.60 and all_foreground < 0.25, (dice, all_foreground)


@pytest.mark.slow
def test_scratch_learns_cxr_lungs_at_256_px():
    dice, all_foreground = _scratch_finetune_dice("cxr-lungs-folder", "CXR_lungs_512", epochs=15)
    assert dice >= 0.85 and all_foreground < 0.5, (dice, all_foreground)
