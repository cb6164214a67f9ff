"""Masked image modelling on ViT encoders: MAE's masks, targets and loss, against direct computations."""

from __future__ import annotations

import pytest
import torch
from ssl_bench_methods.mae import MAE, MAEOptions, token_masks
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


def build(seed: int = 0, channels: int = 1):
    torch.manual_seed(seed)
    method = MAE()
    return method, method.build_model(create_encoder(VIT, in_chans=channels), STAGE, channels)


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


def test_a_step_trains_the_encoder_and_is_the_same_for_the_same_seed():
    def losses(seed: int) -> list[float]:
        method, model = build(seed)
        optimizer, _ = method.configure_optimizer(model, STAGE)
        generator, values = torch.Generator().manual_seed(seed), []
        for _ in range(2):
            loss = method.training_step(model, images(), STAGE, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            values.append(loss.item())
        return values

    first = losses(0)
    assert losses(0) == first and all(a != b for a, b in zip(losses(1), first, strict=True))
    method, model = build()
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    loss = method.training_step(model, images(), STAGE, torch.Generator().manual_seed(0))
    loss.backward()
    # Every encoder weight but MAE's fixed sine-cosine position embedding gets a gradient.
    untrained = [n for n, p in model.encoder.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert untrained == ["model.pos_embed"]
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())  # no step yet


def test_mae_is_for_vits_only_and_the_default_methods_follow_the_runs_encoder(tmp_path):
    registry = get_registry()
    with pytest.raises(ConfigError, match=r"method mae trains vit encoders, not vgg16_bn_tiny \(a cnn\)"):
        build_plan(resolve_config({"methods": ["mae"], "tasks": ["synthetic-lung"]}, {}, registry), registry)
    everything = resolve_config({"tasks": ["synthetic-lung"]}, {}, registry).methods
    assert "mae" not in everything and "simclr" in everything
    on_a_vit = resolve_config({"tasks": ["synthetic-lung"], "encoder": VIT}, {}, registry).methods
    assert "mae" in on_a_vit and "simclr" in on_a_vit


def test_ssl_bench_check_passes_mae():
    result = CliRunner().invoke(app, ["check", "mae"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "SKIP  method mae: 10 steps of each stage, vgg16_bn_tiny on 1-channel images" in result.output
    assert f"PASS  method mae: 10 steps of each stage, {VIT} on 1-channel images" in result.output


def test_options_are_checked():
    with pytest.raises(ConfigError):
        MAEOptions(mask_ratio=1.5)
