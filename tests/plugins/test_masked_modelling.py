"""Masked image modelling: MAE on ViT encoders and SparK on CNNs; masks, targets, losses and SparK's sparse
encoder, against direct computations."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from ssl_bench_methods._global import crop_views
from ssl_bench_methods._masked_distillation import MaskedDistillationOptions, block_masks, token_mask
from ssl_bench_methods.mae import MAEOptions, token_masks
from ssl_bench_methods.spark import SparK, expand_grid, hidden_patch_loss, sparse_encoding, visible_grid
from torch import nn
from typer.testing import CliRunner

from ssl_bench.api import Stage
from ssl_bench.api.nets import create_encoder
from ssl_bench.cli import app
from ssl_bench.config import resolve_config
from ssl_bench.errors import ConfigError
from ssl_bench.planning import build_plan
from ssl_bench.plugins import get_registry

VIT = "vit_tiny_patch16_224"
STAGE = Stage("test", epochs=1, steps_per_epoch=3, batch_size=4, image_size=48, lr=1e-3)


def images(count: int = 4, channels: int = 1) -> torch.Tensor:
    return torch.rand(count, channels, 64, 64, generator=torch.Generator().manual_seed(5))


def build(name: str = "mae", seed: int = 0):
    """A ViT method and its model on grey images, initialised from ``seed`` as the core does."""
    torch.manual_seed(seed)
    method = get_registry().method(name)()
    return method, method.build_model(create_encoder(VIT, in_chans=1), STAGE, 1)


def test_token_masks_hide_three_patches_in_four_and_always_keep_the_prefix_tokens():
    hidden, visible = token_masks(3, 9, 1, 0.75, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert hidden.shape == (3, 7) and visible.shape == (3, 3)  # round(0.75 x 9) = 7 hidden, the class token kept
    for row_hidden, row_visible in zip(hidden.tolist(), visible.tolist(), strict=True):
        assert row_visible[0] == 0 and sorted(row_hidden + row_visible) == list(range(10))
    again = token_masks(3, 9, 1, 0.75, torch.Generator().manual_seed(0), torch.device("cpu"))
    other = token_masks(3, 9, 1, 0.75, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert torch.equal(again[0], hidden) and not torch.equal(other[0], hidden)


def test_the_target_is_each_hidden_patch_normalised_and_the_encoder_never_sees_hidden_pixels():
    _, model = build()
    views = torch.rand(2, 1, 48, 48)
    hidden, visible = token_masks(2, 9, 1, 0.75, torch.Generator().manual_seed(0), torch.device("cpu"))
    target = model.target_pixels(views, hidden)
    for b in range(2):
        for slot, token in enumerate(hidden[b].tolist()):
            row, col = divmod(token - 1, 3)
            patch = views[b, 0, row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16].flatten()
            torch.testing.assert_close(target[b, slot], (patch - patch.mean()) / (patch.var() + 1e-6).sqrt())
    # Hidden pixels changed: the encoder's tokens of the visible patches stay as they were.
    changed = views.clone()
    for b in range(2):
        for token in hidden[b].tolist():
            row, col = divmod(token - 1, 3)
            changed[b, :, row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16] = 0.5
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(
            model.backbone.encode(changed, idx_keep=visible), model.backbone.encode(views, idx_keep=visible)
        )
        # Nor does the decoder: its hidden tokens are the mask token, whatever pixels they hid.
        predicted = model.predicted_pixels(views, hidden, visible)
        torch.testing.assert_close(model.predicted_pixels(changed, hidden, visible), predicted)
        assert predicted.shape == target.shape
        # Its input at a hidden place is the mask token: another mask token, another prediction.
        model.decoder.mask_token.data.add_(1.0)
        assert not torch.allclose(model.predicted_pixels(views, hidden, visible), predicted)


@pytest.mark.parametrize(("name", "untrained"), [("mae", ["model.pos_embed"]), ("ibot", []), ("dinov2", [])])
def test_a_step_trains_the_encoder_and_is_the_same_for_the_same_seed(name, untrained):
    def losses(seed: int) -> list[float]:
        method, model = build(name, seed)
        optimizer, _ = method.configure_optimizer(model, STAGE)
        generator, values = torch.Generator().manual_seed(seed), []
        for step in range(2):
            loss = method.training_step(model, images(), STAGE, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            method.after_step(model, STAGE, step, 2)
            values.append(loss.item())
        return values

    first = losses(0)
    assert losses(0) == first and all(a != b for a, b in zip(losses(1), first, strict=True))
    method, model = build(name)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    loss = method.training_step(model, images(), STAGE, torch.Generator().manual_seed(0))
    loss.backward()
    # Every encoder weight gets a gradient, but MAE's fixed sine-cosine position embedding.
    assert [n for n, p in model.encoder.named_parameters() if p.grad is None or not p.grad.abs().sum()] == untrained
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())  # no step yet


def test_mae_is_for_vits_only_and_the_default_methods_follow_the_runs_encoder(tmp_path):
    registry = get_registry()
    with pytest.raises(ConfigError, match=r"method mae trains vit encoders, not vgg16_bn_tiny \(a cnn\)"):
        build_plan(resolve_config({"methods": ["mae"], "tasks": ["synthetic-lung"]}, {}, registry), registry)
    everything = resolve_config({"tasks": ["synthetic-lung"]}, {}, registry).methods
    assert "mae" not in everything and "simclr" in everything
    on_a_vit = resolve_config({"tasks": ["synthetic-lung"], "encoder": VIT}, {}, registry).methods
    assert "mae" in on_a_vit and "simclr" in on_a_vit


@pytest.mark.parametrize("name", ["mae", "ibot", "dinov2"])
def test_ssl_bench_check_passes_the_vit_methods(name):
    result = CliRunner().invoke(app, ["check", name], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"SKIP  method {name}: 10 steps of each stage, vgg16_bn_tiny on 1-channel images" in result.output
    assert f"PASS  method {name}: 10 steps of each stage, {VIT} on 1-channel images" in result.output


def test_options_are_checked():
    with pytest.raises(ConfigError):
        MAEOptions(mask_ratio=1.5)


# --- SparK: masked modelling on CNNs -----------------------------------------------------------


def convnext_channels_last() -> nn.Module:
    """A ConvNeXt whose blocks run LayerNorm and Linear layers on channels-last maps."""
    return timm.create_model("convnext_atto", features_only=True, conv_mlp=False, in_chans=1)


SPARSE_ENCODERS = {
    "vgg16_bn_tiny": lambda: create_encoder("vgg16_bn_tiny", in_chans=1),
    "resnet18": lambda: create_encoder("resnet18", in_chans=1),
    "convnext_atto": lambda: create_encoder("convnext_atto", in_chans=1),
    "convnext_atto channels-last blocks": convnext_channels_last,
}


def hide(views: torch.Tensor, visible: torch.Tensor, value: float) -> torch.Tensor:
    """``views`` with every pixel of a hidden patch set to ``value``."""
    return torch.where(expand_grid(visible, *views.shape[-2:]), views, torch.full_like(views, value))


@pytest.mark.parametrize("name", SPARSE_ENCODERS)
def test_the_sparse_encoder_is_blind_to_hidden_patches_and_zero_there(name):
    torch.manual_seed(0)
    encoder = SPARSE_ENCODERS[name]().train()
    deepest = 16 if name == "vgg16_bn_tiny" else 32
    views = torch.randn(3, 1, 128, 128)
    grid = views.shape[-1] // deepest
    visible = visible_grid(3, grid, grid, 0.6, torch.Generator().manual_seed(0), views.device)
    first, second = copy.deepcopy(encoder), copy.deepcopy(encoder)
    with sparse_encoding(first, visible), sparse_encoding(second, visible):
        features = first(views)
        features_changed = second(hide(views, visible, 5.0))
    for feature, changed in zip(features, features_changed, strict=True):
        torch.testing.assert_close(changed, feature)
        assert not feature[~expand_grid(visible, *feature.shape[-2:]).expand_as(feature)].any()
    # Batch statistics came from the same visible positions.
    for state, other in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(other, state)
    # Run dense, even on hidden patches of zeros, the encoder is not zero there: the check above could fail.
    dense = copy.deepcopy(encoder)(hide(views, visible, 0.0))
    assert any(feature[~expand_grid(visible, *feature.shape[-2:]).expand_as(feature)].any() for feature in dense)
    # Leaving the block removes every hook: the encoder is dense again.
    with sparse_encoding(encoder, visible):
        encoder(views)
    assert not torch.allclose(encoder(hide(views, visible, 5.0))[-1], encoder(views)[-1])


def test_batch_norm_in_the_sparse_encoder_takes_its_statistics_over_the_visible_positions():
    norm = nn.BatchNorm2d(3).train()
    nn.init.uniform_(norm.weight)
    nn.init.uniform_(norm.bias)
    features = torch.randn(2, 3, 4, 4)
    visible = torch.tensor([[[[True, False], [False, False]]], [[[True, True], [False, True]]]])
    with sparse_encoding(norm, visible):
        normed = norm(features)
    keep = visible.repeat_interleave(2, 2).repeat_interleave(2, 3).expand_as(features)
    for channel in range(3):
        values = features[:, channel][keep[:, channel]]  # 4 pixels of 4 visible patches
        mean, variance = values.mean(), values.var(unbiased=False)
        expected = (values - mean) / (variance + norm.eps).sqrt() * norm.weight[channel] + norm.bias[channel]
        torch.testing.assert_close(normed[:, channel][keep[:, channel]], expected)
        torch.testing.assert_close(norm.running_mean[channel], 0.1 * mean)
        torch.testing.assert_close(norm.running_var[channel], 0.9 + 0.1 * values.var(unbiased=True))
    assert not normed[~keep].any()


def test_visible_grids_keep_two_patches_in_five_and_follow_the_generator():
    visible = visible_grid(4, 5, 5, 0.6, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert visible.shape == (4, 1, 5, 5) and visible.flatten(1).sum(1).tolist() == [10] * 4
    again = visible_grid(4, 5, 5, 0.6, torch.Generator().manual_seed(0), torch.device("cpu"))
    other = visible_grid(4, 5, 5, 0.6, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert torch.equal(again, visible) and not torch.equal(other, visible)
    extreme = visible_grid(2, 2, 2, 0.99, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert extreme.flatten(1).sum(1).tolist() == [1, 1]  # never all hidden, never all visible


def test_the_spark_loss_is_the_error_on_normalised_pixels_of_hidden_patches():
    generator = torch.Generator().manual_seed(3)
    views, predicted = torch.rand(2, 2, 8, 8, generator=generator), torch.rand(2, 2, 8, 8, generator=generator)
    visible = torch.tensor([[[[True, False], [False, True]]], [[[False, True], [True, True]]]])
    errors = []
    for b in range(2):
        for row in range(2):
            for col in range(2):
                if not visible[b, 0, row, col]:
                    window = (b, slice(None), slice(4 * row, 4 * row + 4), slice(4 * col, 4 * col + 4))
                    target = views[window]
                    target = (target - target.mean()) / (target.var() + 1e-6).sqrt()
                    errors.append((predicted[window] - target).pow(2).mean())
    torch.testing.assert_close(hidden_patch_loss(predicted, views, visible, 4), torch.stack(errors).mean())


def test_spark_decodes_whole_images_from_every_encoder_and_refuses_vits():
    for name in ("vgg16_bn_tiny", "resnet18", "convnext_atto"):
        model = SparK().build_model(create_encoder(name, in_chans=1), STAGE, 1)
        grid = 64 // model.patch_size
        visible = visible_grid(2, grid, grid, 0.6, torch.Generator().manual_seed(0), torch.device("cpu"))
        assert model(torch.rand(2, 1, 64, 64), visible).shape == (2, 1, 64, 64)
    registry = get_registry()
    config = resolve_config({"methods": ["spark"], "tasks": ["synthetic-lung"], "encoder": VIT}, {}, registry)
    with pytest.raises(ConfigError, match=rf"method spark trains cnn encoders, not {VIT} \(a vit\)"):
        build_plan(config, registry)


# --- iBOT and the DINOv2-style method: self-distillation with hidden patches on ViTs ------------


def test_block_masks_hide_a_share_of_half_the_views_in_rectangles_drawn_from_the_generator():
    options = MaskedDistillationOptions()
    masks = block_masks(16, 8, 8, options, torch.Generator().manual_seed(0))
    counts = masks.flatten(1).sum(1)
    assert masks.shape == (16, 8, 8) and int((counts > 0).sum()) == 8  # half of the views
    assert counts.max() <= round(0.5 * 64) and counts[counts > 0].min() >= 1
    # Targets spread over [0.1, 0.5]: the masked views' shares are not all alike.
    assert counts.max() - counts[counts > 0].min() >= 10
    again = block_masks(16, 8, 8, options, torch.Generator().manual_seed(0))
    assert torch.equal(again, masks) and not torch.equal(block_masks(16, 8, 8, options, torch.Generator()), masks)
    # One view in a batch of one is still masked, and a grid too small for a rectangle still hides a patch.
    assert block_masks(1, 1, 2, options, torch.Generator().manual_seed(0)).sum() == 1


def test_token_masks_never_hide_the_prefix_tokens():
    masks = torch.tensor([[[True, False], [False, True]]])
    assert token_mask(masks, 1).tolist() == [[False, True, False, False, True]]


def _cross_entropy(teacher: torch.Tensor, student: torch.Tensor, teacher_temperature: float) -> torch.Tensor:
    """Per row: - sum softmax(teacher / T_t) log softmax(student / 0.1), the centre being zero at the first step."""
    return -(torch.softmax(teacher / teacher_temperature, -1) * torch.log_softmax(student / 0.1, -1)).sum(-1)


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_the_loss_is_dino_on_class_tokens_plus_ibot_on_hidden_patches_plus_koleo(name):
    method, model = build(name)
    batch = images()
    loss = method.training_step(model, batch, STAGE, torch.Generator().manual_seed(3))
    # The same draws again, and each term written out.
    generator = torch.Generator().manual_seed(3)
    global_views = crop_views(batch, method.global_crops, STAGE.image_size, model.encoder, generator)
    local_views = crop_views(batch, method.local_crops, STAGE.image_size, model.encoder, generator)
    grid = global_views.shape[-1] // 16
    masks = block_masks(len(global_views), grid, grid, method.options, generator)
    hidden = token_mask(masks, 1)
    with torch.no_grad():
        teacher = model.teacher.encode(global_views)
        student = model.student.encode(global_views, mask=hidden)
        student_local = model.student.encode(local_views)[:, 0]
        teacher_classes = model.momentum_head(teacher[:, 0]).chunk(2)
        student_classes = model.head(torch.cat([student[:, 0], student_local])).chunk(8)
        pairs = [(t, s) for t in range(2) for s in range(8) if s != t]
        class_loss = sum(_cross_entropy(teacher_classes[t], student_classes[s], 0.04).mean() for t, s in pairs)
        class_loss = class_loss / len(pairs)
        patch_errors = _cross_entropy(model.momentum_head(teacher[hidden]), model.head(student[hidden]), 0.04)
        per_view = hidden.sum(1, keepdim=True).expand_as(hidden)[hidden].float()
        patch_loss = (patch_errors / per_view).sum() / len(global_views)
        expected = class_loss + patch_loss
        if name == "dinov2":
            for classes in student[:, 0].chunk(2):
                unit = torch.nn.functional.normalize(classes, dim=1)
                distances = torch.cdist(unit, unit) + torch.eye(len(unit)) * 10
                expected = expected + 0.1 * -(distances.min(1).values + 1e-8).log().mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-5)
    assert 0 < int(masks.sum()) < masks.numel()


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_distillation_centres_move_in_training_only_and_a_rebuilt_model_continues_exactly(name):
    method, model = build(name)
    optimizer, _ = method.configure_optimizer(model, STAGE)
    for step in range(2):
        loss = method.training_step(model, images(), STAGE, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(model, STAGE, step, 3)
    centres = [buffer.clone() for buffer in model.criteria.buffers()]
    assert all(centre.abs().sum() > 0 for centre in centres)  # moved from their zero start
    model.eval()
    with torch.no_grad():
        method.training_step(model, images(), STAGE, torch.Generator().manual_seed(9))
    assert all(torch.equal(a, b) for a, b in zip(centres, model.criteria.buffers(), strict=True))
    model.train()
    _, rebuilt = build(name, seed=1)
    rebuilt.load_state_dict(model.state_dict())
    expected = method.training_step(model, images(), STAGE, torch.Generator().manual_seed(7))
    assert method.training_step(rebuilt, images(), STAGE, torch.Generator().manual_seed(7)).item() == expected.item()


def test_options_of_the_distillation_methods_are_checked():
    with pytest.raises(ConfigError):
        MaskedDistillationOptions(min_mask_ratio=0.6, max_mask_ratio=0.5)
    with pytest.raises(ConfigError):
        MaskedDistillationOptions(masked_views=2.0)


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_the_teacher_starts_as_the_student(name):
    _, model = build(name)
    teacher = model.momentum_encoder.state_dict()
    assert all(torch.equal(teacher[key], value) for key, value in model.encoder.state_dict().items())
    heads = zip(model.head.parameters(), model.momentum_head.parameters(), strict=True)
    assert all(torch.equal(student, teacher) for student, teacher in heads)


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_the_last_layer_is_frozen_for_a_share_of_the_steps_at_any_budget(name):
    """The first of the paper's 100 epochs is 1% of any budget: 1000 steps of 100 x 1000, 3 of a one-epoch 300."""
    method = get_registry().method(name)()
    for epochs, steps_per_epoch, frozen in [(100, 1000, 1000), (1, 300, 3)]:
        stage = Stage("test", epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=4, image_size=48, lr=1e-3)
        assert method.build_model(create_encoder(VIT, in_chans=1), stage, 1).frozen_last_layer_steps == frozen
