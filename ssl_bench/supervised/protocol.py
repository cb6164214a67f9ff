"""Supervised transfer for protocols: the task's kind prepared from a :class:`Context`, trained by the one loop."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ssl_bench.budget import Budget
from ssl_bench.errors import PluginError
from ssl_bench.protocol import Context, Metric, Outcome, Protocol, Selection
from ssl_bench.supervised.classification import ClassificationProblem
from ssl_bench.supervised.loop import SupervisedProblem, SupervisedSettings, fit, fresh_model, standard_settings
from ssl_bench.supervised.segmentation import SegmentationProblem
from ssl_bench.task import Task

SEGMENTATION_METRICS = (
    Metric("dice", description="per-image Dice at 0.5 (empty on empty is 1)", low=0.0, high=1.0),
    Metric("iou", description="per-image intersection over union at 0.5", low=0.0, high=1.0),
)
CLASSIFICATION_METRICS = (
    Metric("auc", description="macro ROC AUC over classes (one-vs-rest) or labels", low=0.0, high=1.0),
    Metric("acc", description="per-image accuracy (mean over labels for multi-label tasks)", low=0.0, high=1.0),
)


def supervised_metrics(task: Task) -> tuple[Metric, ...]:
    """What supervised transfer reports on ``task``: Dice and IoU, or AUC and accuracy."""
    return CLASSIFICATION_METRICS if task.kind == "classification" else SEGMENTATION_METRICS


def supervised_problem(context: Context) -> SupervisedProblem:
    """The context's data prepared as its task's kind, at the context's settings (a ``SupervisedSettings``)."""
    task, settings = context.task, context.settings
    if task.kind == "segmentation":
        return SegmentationProblem(
            context.data,
            settings,
            label_fraction=context.label_fraction,
            subset_seed=context.subset_seed,
            flips=task.flips,
            rotation_degrees=task.rotation_degrees,
            device=context.device,
        )
    if task.kind == "classification":
        return ClassificationProblem(
            context.data,
            settings,
            label_fraction=context.label_fraction,
            subset_seed=context.subset_seed,
            classes=task.classes,
            multi_label=task.multi_label,
            device=context.device,
        )
    raise PluginError(
        f"task {task.name} has kind {task.kind!r}; supervised transfer knows segmentation, classification"
    )


def supervised_transfer(
    context: Context, *, train_encoder: bool, build_model: Callable[[nn.Module], nn.Module] | None = None
) -> Outcome:
    """Train a fresh head on the context's encoder (or from ``context.start``), select on validation, score on test.

    ``build_model`` replaces the task kind's model (it must keep the encoder as ``model.encoder`` and return
    what the kind's loss expects: logits ``(N, 1, H, W)`` for segmentation).
    """
    problem = supervised_problem(context)
    model = fresh_model(build_model or problem.build_model, context.encoder, context.generator).to(context.device)
    if context.start is not None:
        model.load_state_dict(context.start, strict=True)
    settings = context.settings
    result = fit(
        problem,
        model,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr_at,
        train_encoder=train_encoder,
        generator=context.generator,
        progress=context.progress,
        desc=context.task.name,
        checkpoint=context.workdir / "fit.pt" if context.workdir is not None else None,
    )
    model.load_state_dict(result.best_state)
    return Outcome(
        scores=problem.score(model),
        selection=Selection(result.best_epoch, result.best_val_loss, problem.val_loss_name),
        seconds=result.seconds,
        train_images_per_second=result.train_images_per_second,
        state=result.best_state,
    )


class SupervisedProtocol(Protocol):
    """A protocol that trains a head (and the encoder unless ``frozen_encoder``) by supervised transfer, with the
    published schedules (:func:`standard_settings`) and the task kind's metrics. Subclasses name themselves."""

    def settings(self, budget: Budget, task: Task) -> SupervisedSettings:
        return standard_settings(budget, task)

    def metrics(self, task: Task) -> tuple[Metric, ...]:
        return supervised_metrics(task)

    def run(self, context: Context) -> Outcome:
        return supervised_transfer(context, train_encoder=not self.frozen_encoder)
