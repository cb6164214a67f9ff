"""A short scratch fine-tune at 256 px on real data learns: DRIVE vessels and the 60 CXR lungs.

Without pretraining, ``finetune`` is the released random-init baseline: no frozen phase, the whole network trained
end to end once.
"""

import numpy as np
import pytest
import torch
from conftest import shared_data
from ssl_bench_protocols.finetune import Finetune, FinetuneSettings

from ssl_bench.models import create_encoder
from ssl_bench.plugins import get_registry
from ssl_bench.protocol import Context
from ssl_bench.supervised.loop import SupervisedSettings


def _scratch_finetune_dice(task_name: str, folder: str, epochs: int) -> tuple[float, float]:
    """Test Dice of a scratch encoder fine-tuned at 256 px, and that of predicting all foreground."""
    task = get_registry().task(task_name)
    data = task.load(shared_data(folder).parent)
    masks = data.test.masks.float()
    all_foreground = (2 * masks.sum((1, 2)) / (masks.sum((1, 2)) + masks[0].numel())).mean().item()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = create_encoder("vgg16_bn_tiny", task.channels)
    protocol = Finetune()
    assert protocol.continues_from(task, pretrained=False) is None  # nothing runs before it
    outcome = protocol.run(
        Context(
            encoder=encoder,
            data=data,
            task=task,
            settings=FinetuneSettings.after(SupervisedSettings(image_size=256, epochs=epochs, batch_size=4)),
            label_fraction=1.0,
            generator=torch.Generator().manual_seed(0),
            device=torch.device("cpu"),
            pretrained=False,
        )
    )
    assert outcome.scores["dice"].ids == data.test.ids
    return float(np.mean(outcome.scores["dice"].per_image)), all_foreground


@pytest.mark.slow
def test_scratch_learns_drive_vessels_at_256_px():
    dice, all_foreground = _scratch_finetune_dice("drive-vessel", "DRIVE", epochs=30)
    assert dice >= 0.60 and all_foreground < 0.25, (dice, all_foreground)


@pytest.mark.slow
def test_scratch_learns_cxr_lungs_at_256_px():
    dice, all_foreground = _scratch_finetune_dice("cxr-lungs-folder", "CXR_lungs_512", epochs=15)
    assert dice >= 0.85 and all_foreground < 0.5, (dice, all_foreground)
