"""CPU speed benchmarks of the hot loops (run with `tox -e bench`, not part of the test suite).

Each benchmark is one optimiser step at the demo size, so that figures compare across commits.
"""

import pytest
import torch

from ssl_bench.augment import normalize
from ssl_bench.data.phantoms import make_fundus
from ssl_bench.metrics import soft_dice_loss
from ssl_bench.models import SegmentationModel, create_encoder
from ssl_bench.plugins import get_registry

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def fundus():
    return torch.from_numpy(make_fundus(16, 128, seed=0).images).float().div(255)


@pytest.mark.parametrize("method_name", ["simclr"])
def test_pretraining_step(benchmark, fundus, method_name):
    method = get_registry().method(method_name)()
    stage = method.stages("demo")[0]
    model = method.build_model(create_encoder("vgg16_bn_tiny", 3), stage, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=stage.lr)
    generator = torch.Generator().manual_seed(0)
    images = fundus[: stage.batch_size]

    def step():
        loss = method.training_step(model, images, stage, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    benchmark.extra_info["source_images_per_step"] = stage.batch_size
    benchmark(step)


@pytest.mark.parametrize("size", [96, 128])
def test_transfer_step(benchmark, fundus, size):
    model = SegmentationModel(create_encoder("vgg16_bn_tiny", 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = normalize(torch.nn.functional.interpolate(fundus[:4], size=(size, size), mode="bilinear"))
    masks = (images[:, :1] > 0).float()

    def step():
        loss = soft_dice_loss(torch.sigmoid(model(images)), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    benchmark(step)
