"""The global baselines: MoCo v2, MoCo v3, BYOL, SimSiam, NNCLR, DINO, Barlow Twins, VICReg, SwAV, RotNet and
instance spreading.

Contract behaviour for every method (steps on grey and colour images, learning, export, determinism,
resumption), then each known formula against a direct computation written here.
"""

import math

import pytest
import torch
from ssl_bench_methods._global import two_views
from ssl_bench_methods.barlowtwins import BarlowTwins, BarlowTwinsOptions
from ssl_bench_methods.byol import BYOL
from ssl_bench_methods.dino import DINO, DINOOptions
from ssl_bench_methods.moco import MoCo, MoCoOptions
from ssl_bench_methods.moco_v3 import MoCoV3, contrastive_loss
from ssl_bench_methods.rotnet import rotations
from ssl_bench_methods.swav import SwAVOptions
from ssl_bench_methods.vicreg import VICReg, VICRegOptions
from typer.testing import CliRunner

from ssl_bench.api import Stage
from ssl_bench.api.data import make_cxr, make_fundus
from ssl_bench.api.nets import create_encoder
from ssl_bench.cli import app
from ssl_bench.models import SegmentationModel
from ssl_bench.plugins import get_registry

METHODS = [
    *("moco", "moco-v3", "byol", "simsiam", "nnclr", "dino", "barlowtwins", "vicreg", "swav", "rotnet", "spark"),
    "instance-spreading",
]
ENCODER = "vgg16_bn_tiny"
SIZE = 32
BATCH = 8


def source_images(channels: int, count: int = BATCH) -> torch.Tensor:
    """Phantom source images as the core hands them over: float in [0, 1], (count, channels, H, W)."""
    phantoms = (make_fundus if channels == 3 else make_cxr)(count, 48, seed=0).images
    return torch.from_numpy(phantoms).float().div(255)


def tiny_stage(steps: int) -> Stage:
    return Stage("test", epochs=1, steps_per_epoch=steps, batch_size=BATCH, image_size=SIZE, lr=1e-3)


def build(name: str, channels: int, stage: Stage, seed: int = 0, options: object | None = None):
    """The method and its model, initialised from ``seed`` as the core does."""
    method = get_registry().method(name)(options)
    torch.manual_seed(seed)
    model = method.build_model(create_encoder(ENCODER, in_chans=channels), stage, channels)
    return method, model


def train(method, model, images, stage, seed: int, steps: int, same_views: bool = False) -> list[float]:
    """``steps`` optimiser steps as the core takes them; ``same_views`` redraws identical views every step."""
    optimizer, _ = method.configure_optimizer(model, stage)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        if same_views:
            generator = torch.Generator().manual_seed(seed)
        loss = method.training_step(model, images, stage, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_step(model, stage, step, steps)
        losses.append(loss.item())
    return losses


def encoder_copy(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.encoder.state_dict().items()}


# --- every method -----------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", METHODS)
def test_a_step_on_grey_and_colour_images_gives_a_finite_scalar_loss_that_trains_the_encoder(name, channels):
    stage = tiny_stage(1)
    method, model = build(name, channels, stage)
    before = encoder_copy(model)
    loss = method.training_step(model, source_images(channels), stage, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    trained = [p for p in model.encoder.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(trained) == len(list(model.encoder.parameters()))
    train(method, model, source_images(channels), stage, seed=0, steps=1)
    assert any(not torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())


@pytest.mark.parametrize("name", METHODS)
def test_steps_on_a_fixed_batch_lower_the_loss(name):
    # A queue of one batch holds, from the second step on, the keys of the same images: a stable set of
    # negatives. MoCo's default queue fills with ever more of them, so its loss first rises by design.
    # DINO's target moves by design as its centre follows the teacher, and its last layer is frozen at first: with a
    # still centre and the last layer free, its loss falls.
    options = {
        "moco": MoCoOptions(queue_size=BATCH),
        "dino": DINOOptions(frozen_last_layer_fraction=0.0, center_momentum=1.0),
    }.get(name)
    stage = tiny_stage(10)
    method, model = build(name, 3, stage, options=options)
    losses = train(method, model, source_images(3), stage, seed=0, steps=10, same_views=True)
    # The first step is left out: MoCo's queue then still holds its random initial keys.
    assert sum(losses[-3:]) / 3 < sum(losses[1:4]) / 3, losses


@pytest.mark.parametrize("name", METHODS)
def test_exported_encoder_loads_into_the_transfer_model_and_differs_from_a_fresh_one(name):
    stage = tiny_stage(2)
    method, model = build(name, 1, stage, seed=0)
    train(method, model, source_images(1), stage, seed=0, steps=2)
    exported = encoder_copy(model)
    transfer = SegmentationModel(create_encoder(ENCODER, in_chans=1))
    transfer.encoder.load_state_dict(exported, strict=True)
    loaded = transfer.encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in exported.items())
    torch.manual_seed(0)  # the very initialisation the method started from
    fresh = create_encoder(ENCODER, in_chans=1).state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in exported.items() if v.is_floating_point())


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_gives_the_same_losses_and_another_seed_others(name):
    def losses(seed: int) -> list[float]:
        stage = tiny_stage(2)
        method, model = build(name, 3, stage, seed=seed)
        return train(method, model, source_images(3), stage, seed=seed, steps=2)

    first = losses(0)
    assert losses(0) == first
    assert all(a != b for a, b in zip(losses(1), first, strict=True))


@pytest.mark.parametrize("name", METHODS)
def test_a_model_rebuilt_from_its_state_dict_continues_exactly(name):
    """What a resumed run relies on: the state dict holds every piece of state (queues, step counters)."""
    stage = tiny_stage(3)
    images = source_images(3)
    method, model = build(name, 3, stage, seed=0)
    train(method, model, images, stage, seed=0, steps=2)
    _, rebuilt = build(name, 3, stage, seed=1)
    rebuilt.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(7)
    expected = method.training_step(model, images, stage, generator)
    generator.manual_seed(7)
    assert method.training_step(rebuilt, images, stage, generator).item() == expected.item()


@pytest.mark.parametrize("name", METHODS)
def test_ssl_bench_check_passes(name):
    result = CliRunner().invoke(app, ["check", name], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output


# --- momentum encoders ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "step", "total", "momentum"),
    [
        *((MoCo(), 0, 10, 0.999), (MoCo(), 9, 10, 0.999), (BYOL(), 0, 10, 0.996), (BYOL(), 9, 10, 1.0)),
        *((MoCoV3(), 0, 10, 0.99), (MoCoV3(), 5, 11, 0.995), (MoCoV3(), 10, 11, 1.0)),
        *((DINO(), 0, 10, 0.996), (DINO(), 10, 11, 1.0)),
    ],
)
def test_after_step_moves_the_momentum_copies_by_the_published_momentum(method, step, total, momentum):
    stage = tiny_stage(total)
    model = method.build_model(create_encoder(ENCODER, in_chans=3), stage, 3)
    with torch.no_grad():
        for parameter in [*model.encoder.parameters(), *model.head.parameters()]:
            parameter.add_(torch.randn_like(parameter))
    online = [p.clone() for p in [*model.encoder.parameters(), *model.head.parameters()]]
    copies = [*model.momentum_encoder.parameters(), *model.momentum_head.parameters()]
    old = [p.clone() for p in copies]
    method.after_step(model, stage, step, total)
    assert not any(p.requires_grad for p in copies)
    for new, previous, current in zip(copies, old, online, strict=True):
        torch.testing.assert_close(new, momentum * previous + (1 - momentum) * current)


def test_moco_enqueues_keys_in_training_only():
    stage = tiny_stage(1)
    method, model = build("moco", 3, stage)
    bank = model.criterion.memory_bank.bank
    initial = bank.clone()
    with torch.no_grad():
        method.training_step(model, source_images(3), stage, torch.Generator().manual_seed(0))
    assert torch.equal(bank, initial)
    method.training_step(model, source_images(3), stage, torch.Generator().manual_seed(0))
    assert not torch.equal(bank[:BATCH], initial[:BATCH]) and torch.equal(bank[BATCH:], initial[BATCH:])


def test_nnclr_looks_up_both_views_before_the_first_views_join_the_support_set_in_training_only():
    stage = tiny_stage(1)
    method, model = build("nnclr", 3, stage)
    bank = model.support_set.bank  # (size, dim): one row per entry
    initial = bank.clone()
    with torch.no_grad():  # as the core validates: in eval mode
        method.training_step(model.eval(), source_images(3), stage, torch.Generator().manual_seed(0))
    assert torch.equal(bank, initial)
    loss = method.training_step(model.train(), source_images(3), stage, torch.Generator().manual_seed(0))
    # The loss, computed here from its parts: each view's nearest (cosine) entry of the support set as it was.
    # The step changed no weight, and BatchNorm in training mode reads the batch: the same views, the same outputs.
    with torch.no_grad():
        projections = model(two_views(source_images(3), stage, torch.Generator().manual_seed(0)))
        predictions = model.prediction(projections)
    entries = initial
    cosine = torch.nn.functional.normalize(projections, dim=1) @ torch.nn.functional.normalize(entries, dim=1).T
    neighbours = entries[cosine.argmax(1)]
    first, second = neighbours.chunk(2)
    predicted_first, predicted_second = predictions.chunk(2)
    expected = (nt_xent(first, predicted_second, 0.1) + nt_xent(second, predicted_first, 0.1)) / 2
    torch.testing.assert_close(loss.detach(), expected)
    # Then the first views, and only they, joined the support set.
    assert not torch.equal(bank[:BATCH], initial[:BATCH]) and torch.equal(bank[BATCH:], initial[BATCH:])


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent, written out: each of the 2n rows must pick its twin among the other 2n - 1 (cosine / t)."""
    rows = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    n, losses = len(a), []
    for i in range(2 * n):
        others = [j for j in range(2 * n) if j != i]
        logits = torch.stack([rows[i] @ rows[j] / temperature for j in others])
        twin = others.index((i + n) % (2 * n))
        losses.append(-torch.log_softmax(logits, 0)[twin])
    return torch.stack(losses).mean()


def test_moco_v3_loss_is_twice_the_temperature_times_the_cross_entropy_of_each_query_picking_its_key():
    queries, keys = torch.randn(5, 4), torch.randn(5, 4)
    for temperature in (1.0, 0.2):
        expected = 0.0
        for i in range(5):
            similarity = [torch.cosine_similarity(queries[i], keys[j], dim=0) / temperature for j in range(5)]
            expected += -torch.log_softmax(torch.stack(similarity), 0)[i] / 5
        torch.testing.assert_close(contrastive_loss(queries, keys, temperature), 2 * temperature * expected)


def test_moco_v3_heads_are_its_papers_mlps():
    model = build("moco-v3", 3, tiny_stage(1))[1]
    for head, layers, affine in ((model.head, 3, False), (model.prediction, 2, None)):
        linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
        norms = [m for m in head.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        assert len(linears) == layers and all(layer.bias is None for layer in linears)
        assert linears[-1].out_features == 256
        # BatchNorm after every hidden layer; after the last, the projector's without affine parameters.
        assert len(norms) == layers - (affine is None) and (affine is None or norms[-1].affine is affine)


def test_dino_loss_is_the_teachers_centred_sharpened_distribution_against_the_students_on_other_views():
    model = build("dino", 3, tiny_stage(1), options=DINOOptions(output_dim=6))[1]
    centre = torch.randn(6)
    model.criterion.center.copy_(centre)
    teacher, student = [torch.randn(4, 6) for _ in range(2)], [torch.randn(4, 6) for _ in range(5)]
    terms = []
    for t, teacher_view in enumerate(teacher):
        target = torch.softmax((teacher_view - centre) / 0.04, dim=1)
        for s, student_view in enumerate(student):
            if s != t:  # a student view is never compared with the teacher's view of the same crop
                terms.append(-(target * torch.log_softmax(student_view / 0.1, dim=1)).sum(1).mean())
    torch.testing.assert_close(model.eval().loss(teacher, student), torch.stack(terms).mean())
    assert torch.equal(model.criterion.center.flatten(), centre)  # validation leaves the centre as it was
    model.train().loss(teacher, student)
    moved = 0.9 * centre + 0.1 * torch.cat(teacher).mean(0)
    torch.testing.assert_close(model.criterion.center.flatten(), moved)


def test_dino_freezes_its_last_layer_for_its_share_of_the_steps_only():
    stage = Stage("test", epochs=2, steps_per_epoch=2, batch_size=BATCH, image_size=SIZE, lr=1e-3)
    method, model = build("dino", 3, stage, options=DINOOptions(frozen_last_layer_fraction=0.5))
    last = model.head.last_layer
    initial = [p.detach().clone() for p in last.parameters()]
    train(method, model, source_images(3), stage, seed=0, steps=2)
    assert all(torch.equal(a, b) for a, b in zip(initial, last.parameters(), strict=True))
    train(method, model, source_images(3), stage, seed=0, steps=1)  # steps_done is 2: half of the 4 steps
    assert not all(torch.equal(a, b) for a, b in zip(initial, last.parameters(), strict=True))


@pytest.mark.parametrize(
    ("epochs", "steps_per_epoch", "frozen", "queue_start"), [(100, 1000, 1000, 15000), (1, 300, 3, 240)]
)
def test_schedule_points_are_shares_of_the_steps_at_any_budget(epochs, steps_per_epoch, frozen, queue_start):
    """At the paper's 100 epochs, DINO's last layer and SwAV's prototypes are frozen for the first epoch and SwAV's
    queues start at epoch 15; a 300-step budget of one epoch keeps the shares (3 steps; the queues once full, after
    3840 / 16 = 240 steps), not the epochs, which would freeze them for the whole run and never start the queues."""
    stage = Stage("test", epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=16, image_size=SIZE, lr=1e-3)
    assert build("dino", 3, stage)[1].frozen_last_layer_steps == frozen
    swav = build("swav", 3, stage)[1]
    assert (swav.prototypes.n_steps_frozen_prototypes, swav.queue_start_step) == (frozen, queue_start)


# --- SwAV's prototypes and queues ---------------------------------------------------------------


def test_swav_freezes_its_prototypes_for_their_share_of_the_steps_and_keeps_them_on_the_unit_sphere():
    stage = Stage("test", epochs=2, steps_per_epoch=1, batch_size=BATCH, image_size=SIZE, lr=1e-2)
    method, model = build("swav", 3, stage, options=SwAVOptions(frozen_prototype_fraction=0.5))
    prototypes = model.prototypes.heads[0].weight
    frozen = prototypes.clone()
    train(method, model, source_images(3), stage, seed=0, steps=1)
    torch.testing.assert_close(prototypes, frozen)  # only renormalised
    train(method, model, source_images(3), stage, seed=0, steps=1)  # its after_step(0) leaves steps_done at 1
    assert not torch.allclose(prototypes, frozen)
    torch.testing.assert_close(prototypes.norm(dim=1), torch.ones(len(prototypes)))


@pytest.mark.parametrize(
    ("queue_batches", "start_fraction", "expected"),
    [(2, 1 / 3, [False] * 3 + [True] * 2), (4, 0.0, [False] * 4 + [True])],  # a third of 9 steps is step 3
)
def test_swav_queues_join_the_loss_at_their_start_share_and_once_full(queue_batches, start_fraction, expected):
    options = SwAVOptions(queue_length=queue_batches * BATCH, queue_start_fraction=start_fraction)
    stage = Stage("test", epochs=3, steps_per_epoch=3, batch_size=BATCH, image_size=SIZE, lr=1e-3)
    method, model = build("swav", 3, stage, options=options)
    features = [torch.nn.functional.normalize(torch.randn(BATCH, options.projection_dim), dim=1) for _ in range(2)]
    in_use = []
    for step in range(len(expected)):
        in_use.append(model.queued_scores(features) is not None)
        method.after_step(model, stage, step, 9)
    assert in_use == expected


# --- known formulas against direct computations ------------------------------------------------


def test_vicreg_loss_is_weighted_invariance_variance_and_covariance():
    options = VICRegOptions(invariance_weight=2.0, variance_weight=3.0, covariance_weight=5.0)
    first, second = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64) * 0.3

    def variance(z):  # hinge on a standard deviation of 1, mean over dimensions
        return sum(max(0.0, 1 - math.sqrt(z[:, d].var().item() + 1e-4)) for d in range(z.shape[1])) / z.shape[1]

    def covariance(z):  # squared off-diagonal covariances over the dimension count
        centred = z - z.mean(dim=0)
        count, dims = z.shape
        cov = [[(centred[:, i] * centred[:, j]).sum().item() / (count - 1) for j in range(dims)] for i in range(dims)]
        return sum(cov[i][j] ** 2 for i in range(dims) for j in range(dims) if i != j) / dims

    invariance = ((first - second) ** 2).mean().item()
    # As the authors' code: variance averaged over the two branches, covariance summed.
    expected = (
        2.0 * invariance
        + 3.0 * (variance(first) + variance(second)) / 2
        + 5.0 * (covariance(first) + covariance(second))
    )
    assert VICReg(options).criterion(first, second).item() == pytest.approx(expected, rel=1e-6)


def test_barlow_twins_loss_is_the_cross_correlation_against_identity():
    weight = 0.25
    first, second = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)

    def standardised(z):  # over the batch, biased variance and eps as batch norm
        return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + 1e-5)

    a, b = standardised(first), standardised(second)
    count, dims = a.shape
    expected = 0.0
    for i in range(dims):
        for j in range(dims):
            correlation = sum(a[n, i].item() * b[n, j].item() for n in range(count)) / count
            expected += (1 - correlation) ** 2 if i == j else weight * correlation**2
    loss = BarlowTwins(BarlowTwinsOptions(off_diagonal_weight=weight)).criterion(first, second)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def _looped_batch_criterion(features: torch.Tensor, temperature: float) -> torch.Tensor:
    """ld-spec.md's batch criterion, term by term (its value only)."""
    count = len(features)
    total = features.new_zeros(())
    for i in range(count):
        positive = (i + count // 2) % count
        exps = {j: torch.exp(features[i] @ features[j] / temperature) for j in range(count) if j != i}
        denominator = sum(exps.values()) + 1e-10
        total = total + torch.log(exps[positive] / denominator)
        for j, value in exps.items():
            if j != positive:
                total = total + torch.log(1 - value / denominator)
    return -total / count


def test_instance_spreading_is_the_batch_criterion_of_its_unit_view_embeddings_at_temperature_0_1():
    # Its shared implementation is tested against the formula, gradient included, in test_ld.py.
    stage = tiny_stage(1)
    method, model = build("instance-spreading", 3, stage)
    images = source_images(3)
    loss = method.training_step(model, images, stage, torch.Generator().manual_seed(0))
    with torch.no_grad():
        embeddings = model(two_views(images, stage, torch.Generator().manual_seed(0)))
    assert embeddings.shape == (2 * BATCH, 128)
    expected = _looped_batch_criterion(torch.nn.functional.normalize(embeddings.double(), dim=1), temperature=0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def _quarter_turn(row: int, column: int, size: int) -> tuple[int, int]:
    """Where a pixel goes when a square image turns 90 degrees counter-clockwise on screen (rows go down)."""
    return size - 1 - column, row


def test_rotation_label_k_is_the_image_turned_counter_clockwise_k_quarter_turns():
    size = 4
    images = torch.rand(2, 3, size, size)
    turned, labels = rotations(images)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for view, label, image in zip(turned, labels.tolist(), images.repeat(4, 1, 1, 1), strict=True):
        expected = torch.empty_like(image)
        for row in range(size):
            for column in range(size):
                target = (row, column)
                for _ in range(label):
                    target = _quarter_turn(*target, size)
                expected[:, target[0], target[1]] = image[:, row, column]
        assert torch.equal(view, expected)
        assert torch.equal(view, torch.rot90(image, label, dims=(-2, -1)))
