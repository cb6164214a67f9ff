"""LD's stage-2 step on the CPU beside a direct, unoptimised reference step; writes ``benchmarks/ld_cpu.json``.

The reference computes the same loss the way the released code does: composite normalisations, per-sample
loops to line view 2 up and to build the mixup targets, the (N, K, D, H, W) broadcast for region features,
a loop over images for L_ld and the entropy formula through autograd. Both steps make the same views, run
the same network weights and are checked to give the same loss before they are timed. Bytes saved for
backward count each storage that autograd keeps once (parameters excluded).

Run: OMP_NUM_THREADS=2 python -m pytest benchmarks/test_bench_ld.py --benchmark-only
(torch takes its thread count from OMP_NUM_THREADS; the figures record it). On a machine that other work
keeps busy, OpenMP threads that outnumber the free cores stall one another: use fewer threads there.
"""

import copy
import json
import platform
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ssl_bench_methods.ld import LDViews, LocalDiscrimination, ld_loss, make_views

from ssl_bench.api.data import make_fundus
from ssl_bench.api.nets import create_encoder

FIGURES = Path(__file__).with_name("ld_cpu.json")
SAMPLES, SIZE = 2, 64
# The published setting: 4 samples (20 network images) of 448 px.
PUBLISHED_SAMPLES, PUBLISHED_SIZE = 4, 448
EPS = 1e-10


# --- the reference step -----------------------------------------------------------------------------


def reference_l2(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x / (x.pow(2).sum(dim, keepdim=True).sqrt() + EPS)


def reference_batch_criterion(x: torch.Tensor, temperature: float) -> torch.Tensor:
    n = x.shape[0]
    keys = x.detach()
    others = 1 - torch.eye(n)
    swapped = torch.cat([keys[n // 2 :], keys[: n // 2]])
    positive = ((x * swapped).sum(1) / temperature).exp()
    scores = (x @ keys.T / temperature).exp() * others
    denominator = scores.sum(1)
    positive_probability = positive / (denominator + EPS)
    probabilities = scores / (denominator.repeat(n, 1).T + EPS)
    negatives = (1 - probabilities).log().sum(1) - (1 - positive_probability).log()
    return -(positive_probability.log().sum() + negatives.sum()) / n


def reference_objective(embeddings, assignments, views: LDViews, options) -> torch.Tensor:
    samples, temperature = views.samples, options.batch_temperature
    patches = reference_l2(F.adaptive_avg_pool2d(embeddings, options.grid), dim=1)
    targets = torch.zeros(samples, *patches.shape[1:])
    for b in range(samples):
        w = views.mix_weights[b]
        targets[b] = w * patches[b] + (1 - w) * patches[samples + b]
    targets = reference_l2(targets.detach(), dim=1)
    aligned = patches.clone()
    for i, op in enumerate(views.view2_ops.tolist()):
        flip, turns = divmod(op, 4)
        cell_grid = aligned[2 * samples + i]
        if flip:
            cell_grid = cell_grid.flip(1, 2)
        aligned[2 * samples + i] = torch.rot90(cell_grid, -turns, dims=(1, 2))
    dim = patches.shape[1]
    pd = reference_batch_criterion(aligned[: 4 * samples].permute(0, 2, 3, 1).reshape(-1, dim), temperature)
    mixed = torch.cat([aligned[4 * samples :], targets]).permute(0, 2, 3, 1).reshape(-1, dim)
    mix = reference_batch_criterion(mixed, temperature)

    maps = assignments[: 4 * samples]
    regions = (embeddings[: 4 * samples, None] * maps[:, :, None]).mean(dim=(3, 4))
    regions = reference_l2(regions, dim=2)
    centres = reference_l2(regions.mean(dim=0), dim=1)
    ld = 0
    for image_regions in regions:
        probabilities = ((image_regions @ centres.T) / options.ld_temperature).softmax(dim=1)
        ld = ld - probabilities.diagonal().log().mean()
    ld = ld / len(regions)
    entropy = (-maps * torch.log2(maps + 1e-30) - (1 - maps) * torch.log2(1 - maps + 1e-30)).mean()
    return pd + mix + options.ld_weight * ld + options.entropy_weight * entropy


def reference_forward(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = model.unet(images)
    embeddings = reference_l2(model.embedding_head(features), dim=1)
    scores = torch.sigmoid(model.clustering_head(features)) + 1e-9
    return embeddings, scores / scores.sum(dim=1, keepdim=True)


def reference_loss(model, views: LDViews, options) -> torch.Tensor:
    return reference_objective(*reference_forward(model, views.images), views, options)


# --- measurement ----------------------------------------------------------------------------------


def saved_bytes(model, loss_fn) -> int:
    """Bytes of the distinct storages autograd keeps for backward while ``loss_fn()`` runs, parameters aside."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss_fn()
    return sum(storages.values())


@pytest.fixture(scope="module")
def setting():
    """The method, an initial model and the source images; the reference is checked to give our loss."""
    method = LocalDiscrimination()
    stage = method.stages("demo")[1]
    torch.manual_seed(0)
    model = method.build_model(create_encoder("vgg16_bn_tiny", 3), stage, 3)
    sources = torch.from_numpy(make_fundus(2 * SAMPLES, 96, seed=0).images).float() / 255
    views = make_views(sources, SIZE, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, reference = ld_loss(model, views, method.options), reference_loss(model, views, method.options)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5), "the reference must compute our loss"
    return method, model, sources


@pytest.fixture(scope="module")
def figures():
    collected: dict = {}
    yield collected
    if {"ours", "reference", "published_setting"} <= collected.keys():
        ours, reference = collected["ours"], collected["reference"]
        collected["reference_over_ours"] = {
            key: round(reference[key] / ours[key], 2) for key in ("ms_per_step", "min_ms_per_step", "saved_bytes")
        }
        collected["setting"] = {
            "step": "LD stage 2: views, forward, losses, backward, Adam step",
            "samples": SAMPLES,
            "network_images": 5 * SAMPLES,
            "image_size": SIZE,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
        }
        FIGURES.write_text(json.dumps(collected, indent=2, sort_keys=True) + "\n")


@pytest.mark.parametrize("variant", ["ours", "reference"])
def test_ld_step(benchmark, setting, figures, variant) -> None:
    method, initial, sources = setting
    model = copy.deepcopy(initial)
    optimizer, _ = method.configure_optimizer(model, method.stages("demo")[1])
    generator = torch.Generator().manual_seed(0)
    loss_of = ld_loss if variant == "ours" else reference_loss

    def step() -> None:
        loss = loss_of(model, make_views(sources, SIZE, generator), method.options)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    views = make_views(sources, SIZE, torch.Generator().manual_seed(0))
    figures[variant] = {"saved_bytes": saved_bytes(model, lambda: loss_of(model, views, method.options))}
    benchmark.pedantic(step, rounds=10, warmup_rounds=1)
    figures[variant]["ms_per_step"] = round(benchmark.stats.stats.median * 1e3, 1)
    figures[variant]["min_ms_per_step"] = round(benchmark.stats.stats.min * 1e3, 1)


def test_forward_at_the_published_setting(benchmark, figures) -> None:
    """One bf16-autocast forward pass and loss at 448 px, for the bytes it saves for backward: the CPU's
    view of what a GPU step holds (CPU autocast casts much as CUDA autocast does)."""
    method = LocalDiscrimination()
    stage = method.stages("paper")[1]
    model = method.build_model(create_encoder("vgg16_bn_tiny", 3), stage, 3)
    sources = torch.from_numpy(make_fundus(2 * PUBLISHED_SAMPLES, 512, seed=0).images).float() / 255
    views = make_views(sources, PUBLISHED_SIZE, torch.Generator().manual_seed(0))
    saved = benchmark.pedantic(
        saved_bytes, args=(model, lambda: ld_loss(model, views, method.options, mixed_precision=True)), rounds=1
    )
    figures["published_setting"] = {
        "samples": PUBLISHED_SAMPLES,
        "image_size": PUBLISHED_SIZE,
        "precision": "bf16 autocast, fp32 losses",
        "saved_bytes": saved,
    }
