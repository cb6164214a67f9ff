"""Shape-guided segmentation: shape sources in the plan and the ``shape-guided`` protocol on phantoms."""

from __future__ import annotations

import csv
import dataclasses

import pytest
import torch
from fakes import NoiseEncoder, mean_dice, seeded_context
from ssl_bench_protocols import shape_guided
from ssl_bench_protocols.shape_guided import ShapeGuided
from typer.testing import CliRunner

from ssl_bench.api import Availability, ConfigError, Encoder, SegmentationData, SegmentationSplit
from ssl_bench.api.nets import FeatureInfo
from ssl_bench.api.supervised import mask_scores
from ssl_bench.budget import BUILT_IN
from ssl_bench.cli import app
from ssl_bench.config import resolve_config
from ssl_bench.planning import build_plan
from ssl_bench.plugins import get_registry

# The picked cluster must hold most vessel pixels: 0.8 is far above any map without vessel features (the vessel share of
# a phantom is about 8%, so a map that marks every pixel scores Dice about 0.15).
GOOD_DICE = 0.8


def test_mask_scores_match_hand_computed_values():
    probs = torch.tensor([[[0.9, 0.5], [0.2, 0.0]], [[0.1, 0.2], [0.3, 0.4]], [[0.0, 0.0], [0.0, 0.0]]])
    masks = torch.tensor([[[True, False], [True, False]], [[True, True], [False, False]], [[False] * 2] * 2])
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    scores = mask_scores(probs, SegmentationSplit(images, masks, ("a", "b", "c")))
    # Image a: predicted {0, 1} (0.5 counts), truth {0, 2}: overlap 1, Dice 2/4, IoU 1/3. Image b: nothing
    # predicted, Dice 0. Image c: empty on empty, 1.
    assert scores["dice"].per_image == pytest.approx((0.5, 0.0, 1.0))
    assert scores["iou"].per_image == pytest.approx((1 / 3, 0.0, 1.0))
    assert scores["dice"].ids == ("a", "b", "c")


# ----------------------------------------------------------------------------------------------------
# The protocol on phantoms


class MaskEncoder(Encoder):
    """Features that are the vessel mask: the test images are the masks drawn bright (200) on dark (50)."""

    in_chans = 3

    def __init__(self) -> None:
        super().__init__()
        self.feature_info = [FeatureInfo(2, 1)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        bright = (x[:, :1] > 0).float()  # above the normalised mid-grey
        return [torch.cat([bright, 1 - bright], dim=1)]


@pytest.fixture(scope="module")
def phantoms():
    """synthetic-vessel's data, the same as images that show the masks, and its shapes (synthetic-angiogram's)."""
    registry = get_registry()
    data = registry.task("synthetic-vessel").load(None)
    shapes = registry.task(registry.task("synthetic-vessel").shape_source).load(None).train.masks

    def drawn(split: SegmentationSplit) -> SegmentationSplit:
        images = (split.masks[:, None].expand(-1, 3, -1, -1).to(torch.uint8) * 150 + 50).contiguous()
        return SegmentationSplit(images, split.masks, split.ids)

    return data, SegmentationData(drawn(data.train), drawn(data.test)), shapes


def run(encoder: Encoder, data: SegmentationData, shapes: torch.Tensor | None, seed: int = 0, **changes):
    task = get_registry().task("synthetic-vessel")
    settings = dataclasses.replace(ShapeGuided().settings(BUILT_IN["demo"], task), **changes)
    return ShapeGuided().run(seeded_context(encoder, data, task, settings, seed, shapes=shapes))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_features_that_are_the_mask_give_the_vessels(phantoms, seed):
    _, drawn, shapes = phantoms
    assert mean_dice(run(MaskEncoder(), drawn, shapes, seed=seed)) > GOOD_DICE


def test_the_critic_picks_the_cluster_that_looks_like_the_shapes():
    # Four hand-made cluster maps: thin lines like the shapes, blobs, a constant, and noise. Only channel 0 is
    # made of lines, as every shape mask is.
    generator = torch.Generator().manual_seed(0)
    size = 32
    lines = torch.zeros(6, size, size)
    for i in range(6):
        lines[i, :, 4 + 4 * i] = 1.0
        lines[i, 3 * i + 2, :] = 1.0
    blobs = torch.zeros(6, size, size)
    blobs[:, 8:24, 8:24] = 1.0
    maps = torch.stack([lines, blobs, torch.full_like(lines, 0.5), torch.rand(6, size, size, generator=generator)], 1)
    shapes = torch.zeros(10, 1, size, size)
    for i in range(10):
        shapes[i, 0, :, (2 + 3 * i) % size] = 1.0
        shapes[i, 0, (5 + 2 * i) % size, :] = 1.0
    settings = ShapeGuided().settings(BUILT_IN["demo"], get_registry().task("synthetic-vessel"))
    critic = shape_guided.train_critic(maps, shapes, settings, generator)
    assert int(shape_guided.realness(critic, maps).argmax()) == 0


def test_target_training_masks_are_never_used_and_runs_are_deterministic(phantoms, monkeypatch):
    data, _, shapes = phantoms
    maps = []
    monkeypatch.setattr(shape_guided, "mask_scores", lambda predicted, test: maps.append(predicted) or {})
    garbage = SegmentationSplit(data.train.images, ~data.train.masks, data.train.ids)
    for seed, train in ((0, data.train), (0, garbage), (1, data.train)):
        # A fresh RandomEncoder per run: its features are the same in every run.
        run(NoiseEncoder(), SegmentationData(train, data.test), shapes, seed=seed, epochs=2)
    assert torch.equal(maps[0], maps[1]) and not torch.equal(maps[0], maps[2])


def test_settings_are_validated():
    base = ShapeGuided().settings(BUILT_IN["paper"], get_registry().task("drive-vessel"))
    assert (base.image_size, base.clusters, base.epochs) == (512, 8, 100)
    with pytest.raises(ConfigError, match="clusters must be a whole number >= 2, got 1"):
        dataclasses.replace(base, clusters=1)
    with pytest.raises(ConfigError, match=r"critic_steps must be a whole number >= 1, got 2\.5"):
        dataclasses.replace(base, critic_steps=2.5)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        dataclasses.replace(base, lr=0.0)


def test_a_run_without_shapes_says_what_is_missing(phantoms):
    data, _, _ = phantoms
    with pytest.raises(ConfigError, match=r"shape-guided needs shape masks .* for synthetic-vessel"):
        run(NoiseEncoder(), data, None, epochs=1)


# ----------------------------------------------------------------------------------------------------
# Shape sources in the plan


def plan(tmp_path, echo=print, **values):
    values.setdefault("methods", {"scratch": {}})
    values.setdefault("protocols", ["shape-guided", "linear-seg"])
    config = resolve_config(values, {"results": str(tmp_path)}, get_registry())
    return build_plan(config, get_registry(), echo=echo)


def test_only_tasks_with_a_shape_source_are_served_and_all_leaves_the_source_out(tmp_path):
    registry = get_registry()
    assert ShapeGuided().serves(registry.task("synthetic-vessel"))
    assert not ShapeGuided().serves(registry.task("synthetic-lung"))
    assert registry.task("drive-vessel").shape_source == "chase-vessel"
    assert registry.task("chase-vessel").shape_source == "drive-vessel"
    jobs = plan(tmp_path).jobs
    assert {(job.task.name, job.protocol.name) for job in jobs} == {
        ("synthetic-vessel", "shape-guided"),
        ("synthetic-vessel", "linear-seg"),
        ("synthetic-lung", "linear-seg"),
    }


def test_a_run_that_names_no_protocols_leaves_out_a_protocol_not_run_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr(ShapeGuided, "default_run", False)
    named = {job.protocol.name for job in plan(tmp_path / "named", tasks=["synthetic-vessel"]).jobs}
    default = {job.protocol.name for job in plan(tmp_path / "all", tasks=["synthetic-vessel"], protocols="all").jobs}
    assert "shape-guided" in named and "shape-guided" not in default
    assert {"frozen", "finetune", "linear-seg", "clustering"} <= default


def test_the_shapes_fingerprint_is_part_of_the_job_id(tmp_path, monkeypatch):
    source = get_registry().task("synthetic-angiogram")
    before = {job.protocol.name: job for job in plan(tmp_path, tasks=["synthetic-vessel"]).jobs}
    data = source.load(None)
    masks = data.train.masks.clone()
    masks[0, 0, 0] = ~masks[0, 0, 0]
    changed = SegmentationData(SegmentationSplit(data.train.images, masks, data.train.ids), data.test)
    monkeypatch.setattr(type(source), "load", lambda self, root: changed)
    after = {job.protocol.name: job for job in plan(tmp_path, tasks=["synthetic-vessel"]).jobs}
    assert before["shape-guided"].spec["shapes"]["task"] == "synthetic-angiogram"
    assert after["shape-guided"].id != before["shape-guided"].id
    assert after["linear-seg"].id == before["linear-seg"].id and "shapes" not in after["linear-seg"].spec


def test_an_unavailable_shape_source_leaves_the_protocol_out_with_one_line(tmp_path, monkeypatch):
    source = type(get_registry().task("synthetic-angiogram"))
    monkeypatch.setattr(source, "availability", lambda self, root: Availability.missing("no angiograms here"))
    lines = []
    jobs = plan(tmp_path, echo=lines.append, tasks=["synthetic-vessel"]).jobs
    assert [job.protocol.name for job in jobs] == ["linear-seg"]
    about_seeds = [line for line in lines if line.startswith("note: with 1 seed(s)")]  # the one-seed plan's note
    assert [line for line in lines if line not in about_seeds] == [
        "leaving out shape-guided on synthetic-vessel: its shape source synthetic-angiogram cannot run: "
        "no angiograms here"
    ]


def test_run_through_the_cli_writes_records_and_a_leaderboard_with_dice(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "run",
            "-m",
            "scratch",
            "-m",
            "ld",
            "-t",
            "synthetic-vessel",
            "-p",
            "shape-guided",
            "--results",
            str(tmp_path),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    with open(tmp_path / "leaderboard.csv") as stream:
        rows = [row for row in csv.DictReader(stream) if row["protocol"] == "shape-guided"]
    dice = {row["variant"]: row for row in rows if row["metric"] == "dice"}
    assert set(dice) == {"scratch", "ld"} and all(row["headline"] == "True" for row in dice.values())
    assert all(int(row["n_images"]) == 8 and 0 <= float(row["mean"]) <= 1 for row in dice.values())
    assert len(list((tmp_path / "runs").glob("*/result.json"))) == 2
