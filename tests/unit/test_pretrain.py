"""The pretraining loop: checkpoint selection (the best held-out epoch's encoder, where a method asks) and the
bf16 step of the methods that are safe in it."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from ssl_bench.data.phantoms import make_fundus
from ssl_bench.errors import TrainingError
from ssl_bench.method import Method, Stage
from ssl_bench.models import create_encoder
from ssl_bench.plugins import get_registry
from ssl_bench.pools import PreparedPool
from ssl_bench.pretraining import Trainer, pretrain


class Diverging(Method):
    """Its held-out loss (p - 1)^2 grows every step: SGD at lr 1.25 multiplies p - 1 by -1.5."""

    name = "diverging"
    description = "a loss that only gets worse"

    def __init__(self, epochs: int, select_best: bool = True) -> None:
        super().__init__()
        self.epochs = epochs
        self.select_best_checkpoint = select_best

    def stages(self, scale):
        return [Stage("only", self.epochs, 1, 4, 32, 1.25)]

    def build_model(self, encoder, stage, channels):
        model = nn.Module()
        model.encoder, model.p = encoder, nn.Parameter(torch.zeros(()))
        return model

    def configure_optimizer(self, model, stage):
        return torch.optim.SGD(model.parameters(), lr=stage.lr), None

    def training_step(self, model, images, stage, generator):
        # The encoder term moves the encoder a little every step, so that epochs differ.
        return (model.p - 1) ** 2 + 1e-3 * model.encoder(images)[-1].mean()


def _pool() -> PreparedPool:
    images = np.random.default_rng(0).integers(0, 256, (20, 1, 32, 32), dtype=np.uint8)
    return PreparedPool("toy", "toy", images, np.arange(19), np.array([19]))


def _pretrain(method: Diverging, workdir):
    torch.manual_seed(0)
    encoder = create_encoder("vgg16_bn_tiny", 1)
    return pretrain(
        method, encoder, _pool(), stages=method.stages("demo"), seed=1, device=torch.device("cpu"), workdir=workdir
    )


def test_the_best_held_out_epoch_is_exported_not_the_last(tmp_path):
    selected = _pretrain(Diverging(epochs=3), tmp_path / "a")
    assert selected.val_losses[0] < selected.val_losses[1] < selected.val_losses[2]
    assert selected.selected_epoch == 1
    after_one = _pretrain(Diverging(epochs=1, select_best=False), tmp_path / "b")
    last = _pretrain(Diverging(epochs=3, select_best=False), tmp_path / "c")
    assert last.selected_epoch is None
    for name, tensor in selected.encoder_state.items():
        assert torch.equal(tensor, after_one.encoder_state[name]), name
    assert any(not torch.equal(t, last.encoder_state[n]) for n, t in selected.encoder_state.items())


class Exploding(Diverging):
    def training_step(self, model, images, stage, generator):
        return super().training_step(model, images, stage, generator) * float("nan")


def test_a_non_finite_loss_stops_the_run_with_the_method_named(tmp_path):
    with pytest.raises(TrainingError, match=r"diverging: the loss became nan by step 1 of only"):
        _pretrain(Exploding(epochs=1), tmp_path)


class InfiniteHeldOut(Diverging):
    """Finite while it trains, infinite on held-out images (eval mode): only validation sees it."""

    def training_step(self, model, images, stage, generator):
        loss = super().training_step(model, images, stage, generator)
        return loss if model.training else loss * float("inf")


def test_an_infinite_held_out_loss_stops_the_run_rather_than_export_a_diverged_encoder(tmp_path):
    with pytest.raises(TrainingError, match=r"diverging: the held-out loss became inf after epoch 1 of only"):
        _pretrain(InfiniteHeldOut(epochs=2), tmp_path)


BF16_SAFE = [name for name, cls in get_registry().methods.items() if cls.bf16_safe]


@pytest.mark.parametrize("name", BF16_SAFE)
def test_a_bf16_safe_method_loses_within_1e_2_of_fp32_in_the_cores_bf16_step(name: str):
    """The claim behind ``bf16_safe``: the same weights and views give a loss within 1e-2 relative of fp32's."""
    method = get_registry().method(name)()
    stage = dataclasses.replace(method.stages("demo")[0], image_size=64)
    images = make_fundus(24, 96, seed=0).images
    pool = PreparedPool("fundus", "fundus", images, np.arange(24), np.array([], dtype=int))
    extras = method.pool_extras(images)

    def first_loss(bf16: bool) -> float:
        torch.manual_seed(0)
        encoder = create_encoder("vgg16_bn_tiny" if "cnn" in method.encoder_kinds else "vit_tiny_patch16_224", 3)
        trainer = Trainer(method, encoder, pool, torch.device("cpu"), 1, extras, bf16=bf16)
        model, _, _ = trainer.build(0, stage, None)
        loss = trainer._loss(model, pool.train_index[: stage.batch_size], stage, torch.Generator().manual_seed(2))
        assert loss.dtype == torch.float32
        return float(loss.detach())

    fp32, bf16 = first_loss(False), first_loss(True)
    assert fp32 != bf16  # the bf16 path did run in another precision
    assert abs(bf16 - fp32) <= 1e-2 * abs(fp32)


def test_the_methods_whose_loss_moves_under_bf16_stay_in_fp32():
    # Measured on this path: BYOL's first loss moved 5%, SimSiam's 80% (their negative cosine similarities nearly
    # cancel), NNCLR's up to 9% over its first 3 steps (a rounding changes which support-set entry is nearest); LD
    # runs its network under autocast itself on CUDA and keeps its losses in fp32.
    assert not {"byol", "simsiam", "nnclr", "ld", "scratch"} & set(BF16_SAFE)
