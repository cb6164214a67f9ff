"""CPU speed of the global baselines: one demo-profile optimiser step each (run with `tox -e bench`).

Each benchmark records source images per second in its extra info, the figure the runner reports.
"""

import pytest
import torch

from ssl_bench.api import create_encoder, make_fundus
from ssl_bench.plugins import get_registry

METHODS = ["moco", "byol", "simsiam", "barlowtwins", "vicreg", "swav", "rotnet", "instance-spreading"]

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def fundus() -> torch.Tensor:
    return torch.from_numpy(make_fundus(16, 128, seed=0).images).float().div(255)


@pytest.mark.parametrize("method_name", METHODS)
def test_demo_pretraining_step(benchmark, fundus, method_name):
    method = get_registry().method(method_name)()
    stage = method.stages("demo")[0]
    torch.manual_seed(0)
    model = method.build_model(create_encoder("vgg16_bn_tiny", 3), stage, 3)
    optimizer, _ = method.configure_optimizer(model, stage)
    generator = torch.Generator().manual_seed(0)
    images = fundus[: stage.batch_size]
    total_steps = stage.epochs * stage.steps_per_epoch

    def step():
        loss = method.training_step(model, images, stage, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_step(model, stage, 0, total_steps)  # its cost does not depend on the step

    benchmark(step)
    benchmark.extra_info["source_images_per_step"] = stage.batch_size
    benchmark.extra_info["views_per_image"] = method.views_per_image
    benchmark.extra_info["source_images_per_second"] = stage.batch_size / benchmark.stats.stats.mean
