"""Local Discrimination: each loss against a direct formula, the views, the network, the stages and the plugin."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from ssl_bench_methods._criteria import batch_criterion
from ssl_bench_methods.ld import (
    LD_STAGE,
    PD_STAGE,
    LDNetwork,
    LDOptions,
    LDViews,
    LocalDiscrimination,
    apply_view_ops,
    entropy_loss,
    ld_loss,
    ld_objective,
    local_discrimination_loss,
    make_views,
    mixup_loss,
    patch_discrimination_loss,
    region_features,
    undo_view_ops,
)
from typer.testing import CliRunner

from ssl_bench.api import ConfigError, Stage
from ssl_bench.api.data import make_cxr, make_fundus
from ssl_bench.api.nets import create_encoder
from ssl_bench.cli import app

EPS = 1e-10
ALL_OPS = [(true_flip, op) for true_flip in (False, True) for op in range(8)]


def unit_rows(*shape: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def reference_batch_criterion(rows: torch.Tensor, keys: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Ye et al.'s criterion, one term at a time; row i's positive is row (i + N/2) mod N."""
    n = rows.shape[0]
    total = rows.new_zeros(())
    for i in range(n):
        positive = (i + n // 2) % n
        scores = [torch.exp(torch.dot(rows[i], keys[j]) / temperature) for j in range(n)]
        denominator = sum(scores[j] for j in range(n) if j != i) + EPS
        total = total + torch.log(scores[positive] / denominator)
        for j in range(n):
            if j not in (i, positive):
                total = total + torch.log(1 - scores[j] / denominator)
    return -total / n


def reference_turn(grid: torch.Tensor, op: int, true_flip: bool) -> torch.Tensor:
    """View 2's op on (C, S, S): flip (both axes, or a left-right mirror), then rot90 counter-clockwise."""
    flip, turns = divmod(op, 4)
    if flip:
        grid = grid.flip(-1) if true_flip else grid.flip(-2, -1)
    return torch.rot90(grid, turns, dims=(-2, -1))


def reference_unturn(grid: torch.Tensor, op: int, true_flip: bool) -> torch.Tensor:
    flip, turns = divmod(op, 4)
    grid = torch.rot90(grid, -turns, dims=(-2, -1))
    if flip:
        grid = grid.flip(-1) if true_flip else grid.flip(-2, -1)
    return grid


def cell_rows(grids: list[torch.Tensor]) -> torch.Tensor:
    """Stack each (D, G, G) grid's cell vectors, image by image, cells row by row."""
    rows = [grid[:, y, x] for grid in grids for y in range(grid.shape[1]) for x in range(grid.shape[2])]
    return torch.stack(rows)


def normalized(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x / (torch.sqrt((x**2).sum(dim=dim, keepdim=True)) + EPS)


# --- losses ---------------------------------------------------------------------------------------


def test_batch_criterion_equals_the_formula_term_by_term() -> None:
    rows = unit_rows(6, 4)
    assert batch_criterion(rows, 0.1).item() == pytest.approx(reference_batch_criterion(rows, rows).item(), rel=1e-12)
    assert batch_criterion(rows, 0.5).item() == pytest.approx(reference_batch_criterion(rows, rows, 0.5).item())


def test_batch_criterion_takes_no_gradient_through_the_key_side() -> None:
    rows = unit_rows(6, 4).requires_grad_()
    (ours,) = torch.autograd.grad(batch_criterion(rows, 0.1), rows)
    (row_side,) = torch.autograd.grad(reference_batch_criterion(rows, rows.detach()), rows)
    (both_sides,) = torch.autograd.grad(reference_batch_criterion(rows, rows), rows)
    torch.testing.assert_close(ours, row_side)
    assert not torch.allclose(ours, both_sides, atol=1e-4)


@pytest.mark.parametrize("true_flip", [False, True])
def test_pd_pairs_each_patch_with_the_same_cell_of_the_other_view_once_view_2_is_unturned(true_flip) -> None:
    samples, dim, grid = 1, 3, 2
    patches = unit_rows(4 * samples, grid, grid, dim).permute(0, 3, 1, 2)
    ops = torch.tensor([5, 3])
    images = list(patches[: 2 * samples]) + [
        reference_unturn(patches[2 * samples + i], int(op), true_flip) for i, op in enumerate(ops)
    ]
    rows = cell_rows(images)
    expected = reference_batch_criterion(rows, rows)
    assert patch_discrimination_loss(patches, ops, 0.1, true_flip).item() == pytest.approx(expected.item(), rel=1e-12)


def test_mixup_targets_mix_the_first_views_patches_and_pass_no_gradient_back() -> None:
    samples, dim, grid = 2, 3, 2
    first_views = unit_rows(2 * samples, grid, grid, dim).permute(0, 3, 1, 2).requires_grad_()
    mixes = unit_rows(samples, grid, grid, dim, seed=1).permute(0, 3, 1, 2).requires_grad_()
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    targets = []
    for b in range(samples):
        blend = weights[b] * first_views[b] + (1 - weights[b]) * first_views[samples + b]
        targets.append(normalized(blend, dim=0).detach())
    rows = cell_rows(list(mixes) + targets)
    expected = reference_batch_criterion(rows, rows.detach())
    loss = mixup_loss(first_views, mixes, weights, 0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    loss.backward()
    assert first_views.grad is None or torch.all(first_views.grad == 0)
    assert mixes.grad.abs().sum() > 0


def test_ld_is_cross_entropy_of_regions_against_batch_centres_that_stay_in_the_graph() -> None:
    images, clusters, dim, temperature = 3, 4, 5, 0.2
    regions = unit_rows(images, clusters, dim).requires_grad_()

    def reference(detach_centres: bool) -> torch.Tensor:
        centres = []
        for k in range(clusters):
            mean = sum(regions[n, k] for n in range(images)) / images
            centres.append(normalized(mean, dim=0))
        centres = torch.stack(centres)
        if detach_centres:
            centres = centres.detach()
        total = regions.new_zeros(())
        for n in range(images):
            for k in range(clusters):
                logits = [torch.dot(regions[n, k], centres[j]) / temperature for j in range(clusters)]
                total = total - (logits[k] - torch.log(sum(torch.exp(x) for x in logits)))
        return total / (images * clusters)

    loss = local_discrimination_loss(regions, temperature)
    assert loss.item() == pytest.approx(reference(False).item(), rel=1e-12)
    (ours,) = torch.autograd.grad(loss, regions)
    (with_centres,) = torch.autograd.grad(reference(False), regions)
    (without_centres,) = torch.autograd.grad(reference(True), regions)
    torch.testing.assert_close(ours, with_centres)
    assert not torch.allclose(ours, without_centres, atol=1e-4)


def test_entropy_is_zero_for_one_hot_maps_and_known_for_uniform_ones() -> None:
    one_hot = F.one_hot(torch.tensor([[0, 2], [1, 3]]), 4).permute(2, 0, 1)[None].double()
    assert entropy_loss(one_hot).item() == 0.0
    uniform = torch.full((2, 4, 3, 3), 0.25, dtype=torch.float64)
    # -1/4 log2(1/4) - 3/4 log2(3/4)
    assert entropy_loss(uniform).item() == pytest.approx(0.5 + 0.75 * math.log2(4 / 3), rel=1e-12)


def test_entropy_value_and_gradient_are_those_of_the_formula() -> None:
    maps = torch.rand(2, 6, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    maps[0, 0, 0, 0], maps[0, 5, 0, 0] = 1.0, 0.0  # the epsilons keep both ends finite
    maps.requires_grad_()
    formula = (-maps * torch.log2(maps + 1e-30) - (1 - maps) * torch.log2(1 - maps + 1e-30)).mean()
    loss = entropy_loss(maps)
    assert loss.item() == pytest.approx(formula.item(), rel=1e-12)
    (ours,) = torch.autograd.grad(loss, maps)
    (expected,) = torch.autograd.grad(formula, maps)
    torch.testing.assert_close(ours, expected)


def test_region_features_equal_the_broadcast_definition() -> None:
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(2, 5, 4, 6, generator=generator, dtype=torch.float64)
    assignments = torch.rand(2, 3, 4, 6, generator=generator, dtype=torch.float64)
    weighted = (embeddings[:, None] * assignments[:, :, None]).mean(dim=(3, 4))
    torch.testing.assert_close(region_features(embeddings, assignments), normalized(weighted, dim=2))


def test_the_objective_stays_in_fp32_under_bf16_autocast() -> None:
    options = LDOptions(grid=2)
    generator = torch.Generator().manual_seed(0)
    embeddings = F.normalize(torch.randn(5, 4, 8, 8, generator=generator), dim=1)
    assignments = torch.rand(5, 3, 8, 8, generator=generator).softmax(dim=1)
    views = LDViews(torch.empty(5, 3, 8, 8), torch.tensor([1, 6]), torch.tensor([0.4]))
    plain = ld_objective(embeddings, assignments, views, options)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ld_objective(embeddings, assignments, views, options)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(plain.item(), rel=1e-6)


# --- views ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("true_flip", "op"), ALL_OPS)
def test_undoing_view_2s_op_puts_its_patch_grid_on_view_1s(true_flip, op) -> None:
    image = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(op))
    ops = torch.tensor([op])
    turned = apply_view_ops(image, ops, true_flip)
    torch.testing.assert_close(turned[0], reference_turn(image[0], op, true_flip), rtol=0, atol=0)
    view_1_grid, view_2_grid = F.adaptive_avg_pool2d(image, 4), F.adaptive_avg_pool2d(turned, 4)
    torch.testing.assert_close(undo_view_ops(view_2_grid, ops, true_flip), view_1_grid)
    # The released "flip" is a half turn, so in faithful mode flip + two quarter turns is the identity too.
    identity = op == 0 or (op == 6 and not true_flip)
    assert torch.equal(view_2_grid, view_1_grid) == identity


@pytest.mark.parametrize("channels", [1, 3])
def test_views_are_ordered_pairs_plus_mixes_made_before_normalisation(channels) -> None:
    samples, size = 3, 32
    sources = torch.rand(2 * samples, channels, 48, 48, generator=torch.Generator().manual_seed(0))
    views = make_views(sources, size, torch.Generator().manual_seed(1))
    assert views.images.shape == (5 * samples, channels, size, size)
    assert views.view2_ops.shape == (2 * samples,) and views.view2_ops.min() >= 0 and views.view2_ops.max() < 8
    assert torch.all((views.mix_weights >= 0.2) & (views.mix_weights <= 0.8))
    # Normalisation is affine, so a mix made in [0, 1] is the same mix of the normalised first views.
    w = views.mix_weights.view(-1, 1, 1, 1)
    first = views.images[: 2 * samples]
    expected = w * first[:samples] + (1 - w) * first[samples:]
    torch.testing.assert_close(views.images[4 * samples :], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_each_first_view_best_matches_the_unturned_second_view_of_its_own_source(channels) -> None:
    """Two views share one geometric augmentation, and the recorded op undoes view 2's turn."""
    sources = 8
    generator = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(sources, channels, 10, 10, generator=generator), size=80, mode="bilinear")
    views = make_views(smooth, 64, generator)
    first = views.images[:sources]
    second = undo_view_ops(views.images[sources : 2 * sources], views.view2_ops)
    centre = slice(16, 48)  # inside the circle that the +-180 degree rotation keeps
    first, second = (v[:, :, centre, centre].mean(dim=1).flatten(1) for v in (first, second))
    first, second = (F.normalize(v - v.mean(dim=1, keepdim=True), dim=1) for v in (first, second))
    correlation = first @ second.T
    assert torch.equal(correlation.argmax(dim=1), torch.arange(sources))


def test_an_odd_batch_reuses_its_first_image_to_complete_the_pairs() -> None:
    sources = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    odd = make_views(sources, 32, torch.Generator().manual_seed(1))
    completed = make_views(torch.cat([sources, sources[:1]]), 32, torch.Generator().manual_seed(1))
    assert odd.samples == 2
    torch.testing.assert_close(odd.images, completed.images, rtol=0, atol=0)


# --- network --------------------------------------------------------------------------------------


def test_network_shapes_at_448() -> None:
    model = LDNetwork(create_encoder("vgg16_bn_tiny", 3), embedding_dim=32, clusters=16).eval()
    images = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        features = model.encoder(images)
        embeddings, assignments = model(images)
    assert [tuple(f.shape[1:]) for f in features] == [
        (16, 448, 448),
        (32, 224, 224),
        (64, 112, 112),
        (128, 56, 56),
        (128, 28, 28),
    ]
    assert embeddings.shape == (1, 32, 448, 448)
    assert assignments.shape == (1, 16, 448, 448)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(1, 448, 448))
    torch.testing.assert_close(assignments.sum(dim=1), torch.ones(1, 448, 448))


def test_heads_match_the_direct_formulas_in_value_and_gradient() -> None:
    model = LDNetwork(create_encoder("vgg16_bn_tiny", 1), embedding_dim=4, clusters=3).double()
    images = torch.randn(2, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    features = model.unet(images)
    embedding_logits, cluster_logits = model.embedding_head(features), model.clustering_head(features)
    scores = torch.sigmoid(cluster_logits) + 1e-9
    expected = (normalized(embedding_logits, dim=1), scores / scores.sum(dim=1, keepdim=True))
    ours = model(images)
    weights = [torch.randn_like(x) for x in expected]
    expected_grads = torch.autograd.grad(sum((w * x).sum() for w, x in zip(weights, expected, strict=True)), images)
    ours_grads = torch.autograd.grad(sum((w * x).sum() for w, x in zip(weights, ours, strict=True)), images)
    for mine, reference in zip((*ours, *ours_grads), (*expected, *expected_grads), strict=True):
        torch.testing.assert_close(mine, reference)


def test_stage_2_starts_from_stage_1_by_parameter_name() -> None:
    method = LocalDiscrimination()
    pd_stage, ld_stage = method.stages("demo")
    torch.manual_seed(0)
    stage_1 = method.build_model(create_encoder("vgg16_bn_tiny", 3), pd_stage, 3)
    stage_2 = method.build_model(create_encoder("vgg16_bn_tiny", 3), ld_stage, 3)
    assert stage_1.clustering_head is None and stage_2.clustering_head is not None
    before, after = stage_1.state_dict(), stage_2.state_dict()
    assert all(key in after and after[key].shape == value.shape for key, value in before.items())
    shared = ("embedding_head.3.weight", "unet.decoder.levels.0.convs.0.0.weight", "unet.encoder.stages.0.0.0.weight")
    assert not any(torch.equal(before[key], after[key]) for key in shared)
    stage_2.load_state_dict({key: value for key, value in before.items() if key in after}, strict=False)
    carried = stage_2.state_dict()
    for key in shared:
        torch.testing.assert_close(carried[key], before[key])


# --- the method -----------------------------------------------------------------------------------


def test_paper_schedule_and_optimiser() -> None:
    method = LocalDiscrimination()
    assert method.stages("paper") == [
        Stage(PD_STAGE, epochs=20, steps_per_epoch=1000, batch_size=8, image_size=448, lr=1e-3),
        Stage(LD_STAGE, epochs=80, steps_per_epoch=1000, batch_size=8, image_size=448, lr=1e-3),
    ]
    stage = method.stages("paper")[0]
    model = method.build_model(create_encoder("vgg16_bn_tiny", 3), stage, 3)
    optimizer, scheduler = method.configure_optimizer(model, stage)
    assert isinstance(optimizer, torch.optim.Adam)
    rates = []
    for _ in range(21):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == rates[9] == 1e-3 and rates[10] == rates[19] == 5e-4 and rates[20] == 2.5e-4


def test_options_change_the_network_and_the_variant_name() -> None:
    method = LocalDiscrimination(LDOptions(clusters=8, embedding_dim=16))
    assert method.variant == "ld(embedding_dim=16, clusters=8)"
    model = method.build_model(create_encoder("vgg16_bn_tiny", 3), method.stages("demo")[1], 3)
    embeddings, assignments = model(torch.rand(2, 3, 32, 32))
    assert embeddings.shape[1] == 16 and assignments.shape[1] == 8
    with pytest.raises(ConfigError, match="multiple of its grid"):
        LocalDiscrimination(LDOptions(grid=7)).build_model(create_encoder(), method.stages("demo")[0], 3)


@pytest.mark.parametrize(
    "option",
    [{"clusters": 0}, {"embedding_dim": -1}, {"grid": 0}, {"batch_temperature": 0.0}, {"ld_temperature": -0.2}],
)
def test_an_out_of_range_option_is_a_config_error(option) -> None:
    with pytest.raises(ConfigError, match=f"{next(iter(option))} must be positive"):
        LDOptions(**option)


def test_the_cli_reports_an_out_of_range_option_in_one_line(tmp_path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('tasks = ["drive"]\n[methods.ld]\nclusters = 0\n')
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--results", str(tmp_path / "results")])
    assert result.exit_code == 2, result.output
    assert "error: LD option clusters must be positive, got 0" in result.output
    assert "Traceback" not in result.output


def test_a_timm_encoder_gets_full_resolution_maps() -> None:
    method = LocalDiscrimination()
    model = method.build_model(create_encoder("resnet18", 1), method.stages("demo")[1], 1)
    embeddings, assignments = model(torch.rand(2, 1, 32, 32))
    assert embeddings.shape == (2, 32, 32, 32) and assignments.shape == (2, 16, 32, 32)


def demo_run(seed: int, channels: int = 3, steps: int = 2, stage_index: int = 1) -> list[float]:
    method = LocalDiscrimination()
    stage = dataclasses.replace(method.stages("demo")[stage_index], image_size=32)
    make = make_fundus if channels == 3 else make_cxr
    sources = torch.from_numpy(make(stage.batch_size, 48, seed=0).images).float() / 255
    torch.manual_seed(0)
    model = method.build_model(create_encoder("vgg16_bn_tiny", channels), stage, channels)
    optimizer, _ = method.configure_optimizer(model, stage)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        loss = method.training_step(model, sources, stage, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_same_seed_same_losses_other_seed_other_losses() -> None:
    assert demo_run(seed=0) == demo_run(seed=0)
    assert demo_run(seed=0) != demo_run(seed=1)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("stage_index", [0, 1])
def test_steps_run_on_grey_and_colour_images(channels, stage_index) -> None:
    losses = demo_run(seed=0, channels=channels, steps=1, stage_index=stage_index)
    assert all(math.isfinite(loss) for loss in losses)


def test_a_few_demo_steps_lower_the_loss_on_synthetic_fundus_images() -> None:
    method = LocalDiscrimination()
    stage = method.stages("demo")[1]
    pool = torch.from_numpy(make_fundus(16, 96, seed=0).images).float() / 255
    torch.manual_seed(0)
    model = method.build_model(create_encoder("vgg16_bn_tiny", 3), stage, 3)
    optimizer, _ = method.configure_optimizer(model, stage)
    held_out = make_views(pool[:4], stage.image_size, torch.Generator().manual_seed(99))

    def held_out_loss() -> float:
        with torch.no_grad():
            return ld_loss(model, held_out, method.options).item()

    before = held_out_loss()
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        sources = pool[torch.randint(len(pool), (stage.batch_size,), generator=generator)]
        loss = method.training_step(model, sources, stage, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert held_out_loss() < before


def test_ssl_bench_check_passes() -> None:
    result = CliRunner().invoke(app, ["check", "ld"])
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output
