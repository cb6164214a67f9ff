"""CPU speed benchmarks of the hot loops (run with `tox -e bench`; not part of the test suite).

Each method benchmark is one optimiser step of the method's first ``demo`` stage at 64 px on colour phantoms, as
the core takes it (with the pool's extras, e.g. DetCon's cached segments), in fp32 and under bf16 autocast; its
extra info records source images per second, the figure the runner reports. Threads follow ``OMP_NUM_THREADS``
(default: all cores).
"""

import dataclasses

import pytest
import torch

from ssl_bench.augment import normalize
from ssl_bench.data.phantoms import make_fundus
from ssl_bench.metrics import soft_dice_loss
from ssl_bench.models import SegmentationModel, create_encoder
from ssl_bench.plugins import get_registry

PRETRAINING_METHODS = [name for name, cls in get_registry().methods.items() if cls().stages("demo")]


@pytest.fixture(scope="module")
def fundus():
    return make_fundus(16, 128, seed=0).images


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method_name", PRETRAINING_METHODS)
def test_pretraining_step(benchmark, fundus, method_name, precision):
    """At 64 px: ``fp32``, or ``bf16`` under CPU autocast (the losses as each method computes them)."""
    method = get_registry().method(method_name)()
    stage = dataclasses.replace(method.stages("demo")[0], image_size=64)
    torch.manual_seed(0)
    model = method.build_model(create_encoder("vgg16_bn_tiny", 3), stage, 3)
    optimizer, _ = method.configure_optimizer(model, stage)
    generator = torch.Generator().manual_seed(0)
    sources = fundus[: stage.batch_size]
    images = torch.from_numpy(sources).float().div(255)
    extras = method.pool_extras(sources)
    keywords = {} if extras is None else {"extras": torch.from_numpy(extras)}
    total_steps = stage.epochs * stage.steps_per_epoch

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = method.training_step(model, images, stage, generator, **keywords)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_step(model, stage, 0, total_steps)  # its cost does not depend on the step

    benchmark(step)
    benchmark.extra_info["source_images_per_step"] = stage.batch_size
    benchmark.extra_info["views_per_image"] = method.views_per_image
    benchmark.extra_info["source_images_per_second"] = stage.batch_size / benchmark.stats.stats.mean


def test_detcon_segments_a_pool(benchmark):
    """DetCon's once-per-pool over-segmentation of 400 images of 128 px (the synthetic pools' size)."""
    images = make_fundus(400, 128, seed=0).images
    segment = get_registry().method("detcon")().pool_extras
    benchmark.extra_info["images"] = len(images)
    benchmark.pedantic(segment, args=(images,), rounds=3)


@pytest.mark.parametrize("size", [96, 128])
def test_transfer_step(benchmark, fundus, size):
    model = SegmentationModel(create_encoder("vgg16_bn_tiny", 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.from_numpy(fundus[:4]).float().div(255)
    images = normalize(torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear"))
    masks = (images[:, :1] > 0).float()

    def step():
        loss = soft_dice_loss(torch.sigmoid(model(images)), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    benchmark(step)
