"""CPU speed benchmarks of the hot loops (run with `tox -e bench`; not part of the test suite).

Each method benchmark is one optimiser step of the method's first ``demo`` stage at 64 or 128 px on colour phantoms, as
the core takes it (with the pool's extras, e.g. DetCon's cached segments), in fp32 and in bf16 where safe; its
extra info records source images per second, the figure the runner reports. Threads follow ``OMP_NUM_THREADS``
(default: all cores). ``steps_cpu.json`` holds the figures of 2026-12-05 on one core (bf16 1.7-2.5x faster for all
but VICReg/VICRegL, 1.1-1.3x; torch.compile slower there, so not used; of the later methods MoCo v3 and DINO 2x,
SparK, iBOT and DINOv2 1.3x, MAE 1.1-1.2x: block ``bf16_new_methods``).
"""

import dataclasses

import numpy as np
import pytest
import torch

from ssl_bench.augment import normalize
from ssl_bench.data.phantoms import make_fundus
from ssl_bench.metrics import soft_dice_loss
from ssl_bench.models import SegmentationModel, create_encoder
from ssl_bench.plugins import get_registry
from ssl_bench.pools import PreparedPool
from ssl_bench.pretraining import Trainer

PRETRAINING_METHODS = [name for name, cls in get_registry().methods.items() if cls().stages("demo")]


@pytest.fixture(scope="module")
def fundus():
    return make_fundus(16, 128, seed=0).images


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize(
    ("method_name", "precision"),
    [(name, "fp32") for name in PRETRAINING_METHODS]
    + [(name, "bf16") for name in PRETRAINING_METHODS if get_registry().methods[name].bf16_safe],
)
def test_pretraining_step(benchmark, fundus, method_name, precision, size):
    """The core's step at 64 and 128 px on the shared encoder (ViT-tiny for a method that trains ViTs only):
    ``fp32``, or ``bf16`` (autocast, channels-last) where the method is safe in it."""
    method = get_registry().method(method_name)()
    stage = dataclasses.replace(method.stages("demo")[0], image_size=size)
    pool = PreparedPool("fundus", "fundus", fundus, np.arange(len(fundus)), np.array([], dtype=int))
    torch.manual_seed(0)
    encoder = create_encoder("vgg16_bn_tiny" if "cnn" in method.encoder_kinds else "vit_tiny_patch16_224", 3)
    trainer = Trainer(
        method, encoder, pool, torch.device("cpu"), 0, method.pool_extras(fundus), bf16=precision == "bf16"
    )
    model, optimizer, _ = trainer.build(0, stage, None)
    total_steps = stage.epochs * stage.steps_per_epoch
    # after_step's cost does not depend on the step: every round is step 0.
    benchmark(lambda: trainer.step(model, optimizer, stage, 0, total_steps))
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
