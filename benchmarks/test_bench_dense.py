"""CPU speed of the dense and medical baselines (pytest-benchmark; not part of the test suite).

Run with ``python -m pytest benchmarks/test_bench_dense.py --benchmark-only``. Each step benchmark is one
optimiser step of a method's ``demo`` stage on colour phantoms, as the core takes it (DetCon with the pool's
cached segments); source images per second = ``source_images_per_step`` / mean time.
"""

import pytest
import torch

from ssl_bench.data.phantoms import make_fundus
from ssl_bench.models import create_encoder
from ssl_bench.plugins import get_registry

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def fundus():
    return make_fundus(16, 128, seed=0).images


@pytest.mark.parametrize("method_name", ["densecl", "vicregl", "detcon", "models-genesis"])
def test_demo_training_step(benchmark, fundus, method_name):
    method = get_registry().method(method_name)()
    stage = method.stages("demo")[0]
    torch.manual_seed(0)
    model = method.build_model(create_encoder("vgg16_bn_tiny", 3), stage, 3)
    optimizer, _ = method.configure_optimizer(model, stage)
    generator = torch.Generator().manual_seed(0)
    sources = fundus[: stage.batch_size]
    images = torch.from_numpy(sources).float().div(255)
    extras = method.pool_extras(sources)
    keywords = {} if extras is None else {"extras": torch.from_numpy(extras)}

    def step():
        loss = method.training_step(model, images, stage, generator, **keywords)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(model, stage, 0, 1)

    benchmark.extra_info["source_images_per_step"] = stage.batch_size
    benchmark(step)


def test_detcon_segments_a_pool(benchmark):
    """DetCon's once-per-pool over-segmentation of 400 images of 128 px (the synthetic pools' size)."""
    images = make_fundus(400, 128, seed=0).images
    segment = get_registry().method("detcon")().pool_extras
    benchmark.extra_info["images"] = len(images)
    benchmark.pedantic(segment, args=(images,), rounds=3)
