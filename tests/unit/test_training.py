"""The one supervised loop and the protocols on it: settings, seeded init, frozen encoders, the NaN guard, Finetune."""

from __future__ import annotations

import math

import pytest
import torch
from ssl_bench_protocols import finetune
from ssl_bench_protocols.finetune import Finetune, FinetuneSettings
from ssl_bench_protocols.frozen import Frozen, LinearProbe
from test_classify import BrightOrDark, calibrated_encoder, easy_data
from test_transfer import Squares, encoder, squares_data
from torch import nn

from ssl_bench.budget import BUILT_IN, Budget
from ssl_bench.config import protocol_settings
from ssl_bench.errors import ConfigError, TrainingError
from ssl_bench.method import variant_name
from ssl_bench.models import SegmentationModel
from ssl_bench.protocol import Context, changed_settings
from ssl_bench.supervised import protocol as supervised_protocol
from ssl_bench.supervised.classification import ClassificationProblem
from ssl_bench.supervised.loop import (
    SupervisedSettings,
    fit,
    fresh_model,
    seeded_init,
    set_trainable,
    standard_settings,
)
from ssl_bench.supervised.protocol import supervised_problem, supervised_transfer
from ssl_bench.supervised.segmentation import SegmentationProblem

CPU = torch.device("cpu")


class WideBatches(Squares):
    name = "squares-batch-8"
    paper_batch_size = 8


def context(kind: str, seed: int = 0, *, settings: SupervisedSettings | None = None, **fields) -> Context:
    """A tiny segmentation (squares, 10 training images) or classification (64 training images) context."""
    if kind == "segmentation":
        data, task, enc = squares_data(), Squares(), encoder()
        settings = settings or SupervisedSettings(32, 1, 4)
    else:
        data, task = easy_data(), BrightOrDark()
        settings = settings or SupervisedSettings(16, 1, 16)
        enc = calibrated_encoder(data, settings.image_size)
    values = {
        "encoder": enc,
        "data": data,
        "task": task,
        "settings": settings,
        "label_fraction": 1.0,
        "generator": torch.Generator().manual_seed(seed),
        "device": CPU,
        "pretrained": True,
        **fields,
    }
    return Context(**values)


def encoder_prefix(kind: str) -> str:
    return "unet.encoder." if kind == "segmentation" else "encoder."


# --- settings ---------------------------------------------------------------------------------


def test_paper_schedules_are_lds_for_segmentation_and_medmnists_for_classification():
    medmnist = SupervisedSettings(64, 100, 128, 1e-3, lr_decay_epochs=(50, 75), lr_decay=0.1)
    for budget in (BUILT_IN["paper"], BUILT_IN["matched"]):
        assert standard_settings(budget, Squares()) == SupervisedSettings(512, 100, 2, 1e-3)
        assert standard_settings(budget, WideBatches()) == SupervisedSettings(512, 100, 8, 1e-3)
        assert standard_settings(budget, BrightOrDark()) == medmnist
    for task in (Squares(), BrightOrDark()):
        demo = standard_settings(BUILT_IN["demo"], task)
        assert demo.image_size <= 128 and demo.epochs <= 30 and demo.lr_decay_epochs == ()
    assert standard_settings(BUILT_IN["demo"], BrightOrDark()).max_train_images is not None
    assert standard_settings(BUILT_IN["paper"], BrightOrDark()).max_train_images is None
    assert Frozen().settings(BUILT_IN["paper"], WideBatches()) == standard_settings(BUILT_IN["paper"], WideBatches())


def test_a_budgets_downstream_epochs_replace_the_scales_its_size_caps_them_and_the_decay_moves_along():
    budget = Budget("cpu", downstream_epochs=30, downstream_image_size=128)
    assert standard_settings(budget, Squares()) == SupervisedSettings(128, 30, 2, 1e-3)
    # MedMNIST's decay after half and three quarters of the epochs: 30 epochs decay after 15 and 22; its 64 px
    # are under the cap, and stay.
    assert standard_settings(budget, BrightOrDark()) == SupervisedSettings(64, 30, 128, lr_decay_epochs=(15, 22))
    assert standard_settings(Budget("tiny", downstream_image_size=32), BrightOrDark()).image_size == 32


def test_the_learning_rate_decays_once_per_listed_epoch_already_finished():
    settings = SupervisedSettings(28, 100, 128, lr=1e-3, lr_decay_epochs=(50, 75), lr_decay=0.1)
    rates = {epoch: settings.lr_at(epoch) for epoch in (1, 50, 51, 75, 76, 100)}
    assert rates == pytest.approx({1: 1e-3, 50: 1e-3, 51: 1e-4, 75: 1e-4, 76: 1e-5, 100: 1e-5})
    with pytest.raises(ConfigError, match=r"lr_decay_epochs must be increasing.*\[50, 75\]"):
        SupervisedSettings(28, 100, 128, lr_decay_epochs=(75, 50))
    with pytest.raises(ConfigError, match="lr_decay must be in"):
        SupervisedSettings(28, 100, 128, lr_decay=0.0)


def test_impossible_settings_are_config_errors():
    with pytest.raises(ConfigError, match="epochs"):
        SupervisedSettings(32, 0, 4)
    with pytest.raises(ConfigError, match="batch_size"):
        SupervisedSettings(32, 1, 0)
    with pytest.raises(ConfigError, match="image_size"):
        SupervisedSettings(32.0, 1, 4)
    with pytest.raises(ConfigError, match="lr"):
        SupervisedSettings(32, 1, 4, lr=0.0)


# --- seeded init ------------------------------------------------------------------------------


def test_seeded_init_draws_from_the_generator_and_leaves_the_global_rng_alone():
    torch.manual_seed(3)
    state = torch.get_rng_state()

    def weight(seed: int) -> torch.Tensor:
        return seeded_init(lambda: nn.Linear(4, 3), torch.Generator().manual_seed(seed)).weight

    assert torch.equal(weight(0), weight(0)) and not torch.equal(weight(0), weight(1))
    assert torch.equal(state, torch.get_rng_state())


def test_fresh_model_copies_the_encoder():
    enc = encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    model = fresh_model(SegmentationModel, enc, torch.Generator())
    assert model.encoder is not enc
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in before.items())  # same weights, a copy
    with torch.no_grad():
        next(model.encoder.parameters()).add_(1)
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in before.items())


def test_set_trainable_freezes_the_encoder_in_eval_mode():
    model = fresh_model(SegmentationModel, encoder(), torch.Generator())
    set_trainable(model, train_encoder=False)
    assert not model.encoder.training and not any(m.training for m in model.encoder.modules())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert model.head.training and all(p.requires_grad for p in model.head.parameters())
    set_trainable(model, train_encoder=True)
    assert all(m.training for m in model.modules()) and all(p.requires_grad for p in model.parameters())


# --- frozen and trained encoders ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["segmentation", "classification"])
def test_a_frozen_encoder_keeps_its_weights_and_batch_norm_statistics_and_a_trained_one_does_not(kind: str):
    ctx = context(kind)
    prefix = encoder_prefix(kind)
    initial = fresh_model(
        supervised_problem(ctx).build_model, ctx.encoder, torch.Generator().manual_seed(0)
    ).state_dict()
    frozen = supervised_transfer(ctx, train_encoder=False).state
    trained = supervised_transfer(context(kind), train_encoder=True).state
    encoder_keys = [k for k in initial if k.startswith(prefix)]
    head_keys = [k for k in initial if not k.startswith(prefix) and initial[k].is_floating_point()]
    assert encoder_keys and head_keys
    assert {k[len(prefix) :] for k in encoder_keys} == set(ctx.encoder.state_dict())
    for key in encoder_keys:  # weights and BatchNorm running statistics alike: the encoder ran in eval mode
        assert torch.equal(frozen[key], ctx.encoder.state_dict()[key[len(prefix) :]]), key
        assert torch.equal(frozen[key], initial[key]), key
    head_changed = [k for k in head_keys if not torch.equal(frozen[k], initial[k])]
    assert any(k.endswith("weight") for k in head_changed)
    if kind == "classification":  # the head's parameter-free batch norm follows the features
        assert any(k.endswith("running_mean") for k in head_changed)
    encoder_changed = [k for k in encoder_keys if not torch.equal(trained[k], initial[k])]
    assert any(k.endswith("weight") for k in encoder_changed) and any(
        k.endswith("running_mean") for k in encoder_changed
    )


@pytest.mark.parametrize(("protocol", "train_encoder"), [(Frozen, False), (LinearProbe, False), (Finetune, True)])
def test_protocols_train_the_encoder_as_they_declare(monkeypatch: pytest.MonkeyPatch, protocol, train_encoder: bool):
    calls = []
    for module in (supervised_protocol, finetune):
        monkeypatch.setattr(module, "supervised_transfer", lambda ctx, **kwargs: calls.append((ctx, kwargs)))
    ctx = context("segmentation", settings=protocol().settings(BUILT_IN["demo"], Squares()))
    protocol().run(ctx)
    assert calls == [(ctx, {"train_encoder": train_encoder})]
    assert protocol.frozen_encoder is not train_encoder


def test_protocols_serve_their_task_kinds():
    assert Frozen().serves(Squares()) and not Frozen().serves(BrightOrDark())
    assert LinearProbe().serves(BrightOrDark()) and not LinearProbe().serves(Squares())
    assert Finetune().serves(Squares()) and Finetune().serves(BrightOrDark())
    assert [m.name for m in Frozen().metrics(Squares())] == ["dice", "iou"]
    assert [m.name for m in Finetune().metrics(BrightOrDark())] == ["auc", "acc"]


# --- the NaN guard ----------------------------------------------------------------------------


class BreaksAfter(nn.Module):
    """``model``, whose training outputs become NaN from training forward call ``calls + 1`` on."""

    def __init__(self, model: nn.Module, calls: int) -> None:
        super().__init__()
        self.model, self.calls = model, calls

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(images)
        if self.training:
            self.calls -= 1
            if self.calls < 0:
                return out * math.nan
        return out


def _encoder(kind: str) -> nn.Module:
    return encoder() if kind == "segmentation" else calibrated_encoder(easy_data())


def _kind(kind: str):
    settings = SupervisedSettings(32, 3, 4) if kind == "segmentation" else SupervisedSettings(16, 3, 16)
    return supervised_problem(context(kind, settings=settings))


@pytest.mark.parametrize("kind", ["segmentation", "classification"])
@pytest.mark.parametrize("train_encoder", [False, True])
def test_a_nan_training_loss_stops_the_run_naming_the_epoch(kind: str, train_encoder: bool):
    task = _kind(kind)
    # 10 segmentation images in batches of 4, 64 classification images in batches of 16: 3 and 4 batches an epoch.
    batches = 3 if kind == "segmentation" else 4
    model = BreaksAfter(fresh_model(task.build_model, _encoder(kind), torch.Generator()), calls=batches + 1)
    with pytest.raises(TrainingError, match=r"toy: the loss became nan in epoch 2\b"):
        fit(
            task,
            model,
            epochs=3,
            batch_size=4 if kind == "segmentation" else 16,
            lr=1e-3,
            train_encoder=train_encoder,
            generator=torch.Generator(),
            desc="toy",
        )


@pytest.mark.parametrize("kind", ["segmentation", "classification"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_validation_loss_stops_the_run_naming_the_epoch(monkeypatch, kind: str, bad: float):
    task = _kind(kind)
    losses = iter([0.5, 0.4, bad, 0.1])
    monkeypatch.setattr(task, "validation_loss", lambda model: next(losses))
    model = fresh_model(task.build_model, _encoder(kind), torch.Generator())
    with pytest.raises(TrainingError, match=rf"the loss became {bad} in epoch 3\b.*lr=0.001"):
        fit(task, model, epochs=4, batch_size=8, lr=1e-3, train_encoder=True, generator=torch.Generator())


@pytest.mark.parametrize("kind", ["segmentation", "classification"])
def test_supervised_transfer_raises_on_a_diverged_run(monkeypatch, kind: str):
    kind_class = SegmentationProblem if kind == "segmentation" else ClassificationProblem
    monkeypatch.setattr(kind_class, "validation_loss", lambda self, model: math.nan)
    ctx = context(kind)
    with pytest.raises(TrainingError, match=rf"{ctx.task.name}: the loss became nan in epoch 1\b"):
        supervised_transfer(ctx, train_encoder=True)


# --- fine-tuning: where it starts ---------------------------------------------------------------


def test_finetune_continues_from_the_frozen_phase_only_when_pretrained():
    assert Finetune().continues_from(Squares(), pretrained=True) == "frozen"
    assert Finetune().continues_from(BrightOrDark(), pretrained=True) == "linear-probe"
    # Without pretraining the released scratch baseline trains end to end once, with no frozen phase.
    assert Finetune().continues_from(Squares(), pretrained=False) is None
    assert Finetune().continues_from(BrightOrDark(), pretrained=False) is None
    assert Frozen().continues_from(Squares(), pretrained=True) is None
    assert LinearProbe().continues_from(BrightOrDark(), pretrained=True) is None


@pytest.mark.parametrize(
    ("pretrained", "equal_budget", "epochs"), [(False, False, 2), (False, True, 3 + 2), (True, True, 2)]
)
def test_equal_budget_gives_scratch_the_frozen_phases_epochs_as_well(
    monkeypatch: pytest.MonkeyPatch, pretrained: bool, equal_budget: bool, epochs: int
):
    validated = []
    monkeypatch.setattr(ClassificationProblem, "validation_loss", lambda self, model: validated.append(1) or 1.0)
    base = Finetune().settings(BUILT_IN["demo"], BrightOrDark())  # the demo's frozen phase (linear-probe) runs 3 epochs
    changes = {"image_size": 16, "batch_size": 16, "epochs": 2, "equal_budget": equal_budget}
    settings = protocol_settings("finetune", base, changes)
    Finetune().run(context("classification", settings=settings, pretrained=pretrained))
    assert len(validated) == epochs  # one validation per epoch trained
    label = variant_name(
        "finetune", changed_settings(protocol_settings("finetune", base, {"equal_budget": True}), base)
    )
    assert label == "finetune(equal_budget=True)"


@pytest.mark.parametrize("kind", ["segmentation", "classification"])
def test_finetune_starts_from_the_given_state(kind: str):
    tiny = SupervisedSettings(32, 1, 4, lr=1e-9) if kind == "segmentation" else SupervisedSettings(16, 1, 16, lr=1e-9)
    tiny = FinetuneSettings.after(tiny)
    ctx = context(kind, settings=tiny)
    build = supervised_problem(ctx).build_model
    start = fresh_model(build, ctx.encoder, torch.Generator().manual_seed(99)).state_dict()
    own_init = fresh_model(build, ctx.encoder, torch.Generator().manual_seed(0)).state_dict()
    outcome = Finetune().run(context(kind, settings=tiny, start=start))
    parameters = [name for name, _ in fresh_model(build, ctx.encoder, torch.Generator()).named_parameters()]
    head = [name for name in parameters if not name.startswith(encoder_prefix(kind))]
    # One epoch of Adam at lr 1e-9 moves no weight by more than a few 1e-9: the run began at ``start``...
    for name in parameters:
        torch.testing.assert_close(outcome.state[name], start[name], atol=1e-7, rtol=0)
    # ...and not at the head init the generator would have drawn.
    assert any((outcome.state[name] - own_init[name]).abs().max() > 1e-3 for name in head)


@pytest.mark.parametrize("kind", ["segmentation", "classification"])
def test_finetune_loads_the_start_state_strictly(kind: str):
    settings = FinetuneSettings.after(context(kind).settings)
    ctx = context(kind, settings=settings)
    start = fresh_model(supervised_problem(ctx).build_model, ctx.encoder, torch.Generator()).state_dict()
    missing = dict(list(start.items())[1:])
    with pytest.raises(RuntimeError, match="Missing key"):
        Finetune().run(context(kind, settings=settings, start=missing))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        Finetune().run(context(kind, settings=settings, start={**start, "extra.weight": torch.zeros(1)}))


# --- checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["segmentation", "classification"])
def test_an_interrupted_run_resumes_from_its_checkpoint_to_the_same_numbers(monkeypatch, tmp_path, kind: str):
    monkeypatch.setenv("SSL_BENCH_CHECKPOINT_SECONDS", "0")  # a checkpoint at every epoch's end
    epochs = SupervisedSettings(32, 4, 4) if kind == "segmentation" else SupervisedSettings(16, 4, 16)
    straight = supervised_transfer(context(kind, settings=epochs), train_encoder=True)

    calls = {"n": 0}
    original = type(supervised_problem(context(kind, settings=epochs))).validation_loss

    def killed_in_epoch_3(self, model):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the process is stopped after two finished epochs
        return original(self, model)

    monkeypatch.setattr(type(supervised_problem(context(kind, settings=epochs))), "validation_loss", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        supervised_transfer(context(kind, settings=epochs, workdir=tmp_path), train_encoder=True)
    saved = torch.load(tmp_path / "fit.pt", weights_only=True)
    assert saved["progress"]["epoch"] == 2

    monkeypatch.setattr(type(supervised_problem(context(kind, settings=epochs))), "validation_loss", original)
    resumed = supervised_transfer(context(kind, settings=epochs, workdir=tmp_path), train_encoder=True)
    assert resumed.selection == straight.selection
    assert resumed.scores == straight.scores
    assert all(torch.equal(resumed.state[k], straight.state[k]) for k in straight.state)
    assert not (tmp_path / "fit.pt").exists()  # finished: nothing left to resume from
