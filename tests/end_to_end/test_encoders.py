"""Encoders per row: several architectures in one run, each with the scratch of its own, ViTs through every protocol."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import tomllib
import torch
from test_cli import invoke

from ssl_bench.budget import BUILT_IN
from ssl_bench.config import resolve_config
from ssl_bench.engine import Engine
from ssl_bench.errors import ConfigError
from ssl_bench.planning import build_plan
from ssl_bench.plugins import get_registry
from ssl_bench.record import read_record

VIT = "vit_tiny_patch16_224"
#: The smallest settings each protocol takes: the fields of these names it has.
TINY = {"epochs": 1, "image_size": 32, "max_train_images": 8, "batch_size": 4}


def _config(results: Path, **values):
    return resolve_config({"tasks": ["synthetic-lung"], **values}, {"results": str(results)}, get_registry())


def _rows(plan) -> set[tuple[str, str]]:
    return {(job.variant, job.pretraining.encoder) for job in plan.jobs}


def test_each_method_on_its_own_encoders_beside_the_scratch_of_every_encoder_in_use(tmp_path: Path) -> None:
    torch.save({}, tmp_path / "mine.pt")
    values = {
        "methods": {"scratch": {}, "simclr": {"temperature": 0.2, "encoder": ["vgg16_bn_tiny", "resnet18"]}},
        "checkpoints": {"mine": {"file": str(tmp_path / "mine.pt"), "encoder": "mobilenetv3_small_050"}},
        "protocols": ["linear-seg"],
    }
    config = _config(tmp_path, **values)
    assert config.methods["simclr"] == {"temperature": 0.2}  # the encoder is not an option of the method
    assert _rows(build_plan(config, get_registry())) == {
        ("scratch", "vgg16_bn_tiny"),
        ("scratch@resnet18", "resnet18"),
        ("scratch@mobilenetv3_small_050", "mobilenetv3_small_050"),
        ("simclr(temperature=0.2)", "vgg16_bn_tiny"),
        ("simclr(temperature=0.2)@resnet18", "resnet18"),
        ("mine@mobilenetv3_small_050", "mobilenetv3_small_050"),
    }
    # The saved run file gives the same run back.
    saved = resolve_config(tomllib.loads(config.to_toml()), {}, get_registry())
    assert saved == config
    # scratch that names its own encoders keeps to them.
    values["methods"]["scratch"] = {"encoder": "resnet18"}
    assert ("scratch", "vgg16_bn_tiny") not in _rows(build_plan(_config(tmp_path, **values), get_registry()))


def test_an_encoder_a_method_cannot_train_and_a_bad_encoder_value_are_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_registry().method("simclr"), "encoder_kinds", ("cnn",))
    config = _config(tmp_path, methods={"simclr": {"encoder": VIT}}, protocols=["linear-seg"])
    with pytest.raises(ConfigError, match=rf"method simclr trains cnn encoders, not {VIT} \(a vit\)"):
        build_plan(config, get_registry())
    with pytest.raises(ConfigError, match=r"encoder of \[methods.simclr\] must be a name or a list of names"):
        _config(tmp_path, methods={"simclr": {"encoder": 3}})
    with pytest.raises(ConfigError, match="Did you mean resnet18"):
        _config(tmp_path, methods={"simclr": {"encoder": ["resnet1"]}})


def test_a_vit_and_a_resnet_run_every_segmentation_protocol(tmp_path: Path) -> None:
    registry = get_registry()
    task = registry.task("synthetic-lung")
    protocols = {
        name: {key: value for key, value in TINY.items() if key in {f.name for f in dataclasses.fields(settings)}}
        for name, cls in registry.protocols.items()
        if (protocol := cls()).serves(task) and not protocol.uses_shapes
        and dataclasses.is_dataclass(settings := protocol.settings(BUILT_IN["demo"], task))
    }  # fmt: skip
    assert {"frozen", "finetune", "linear-seg", "clustering", "landmarks"} <= set(protocols)
    config = _config(tmp_path, methods={"scratch": {"encoder": ["resnet18", VIT]}}, protocols=protocols)
    summary = Engine(config, torch.device("cpu"), progress=False, echo=lambda line: None).run(
        build_plan(config, registry)
    )
    assert not summary.failed, [failure.error for failure in summary.failed]
    scored = set()
    for path in summary.written:
        record = read_record(path)
        scores = record.metrics[record.headline_metric]
        value = scores.value if scores.value is not None else sum(scores.per_image) / len(scores.per_image)
        assert math.isfinite(value), (record.variant, record.protocol.name)
        scored.add((record.variant, record.encoder, record.protocol.name))
    assert scored == {(f"scratch@{e}", e, p) for e in ("resnet18", VIT) for p in protocols}
    assert invoke("leaderboard", "--results", str(tmp_path)).exit_code == 0
    board = (tmp_path / "leaderboard.md").read_text()
    assert f"Encoders: `resnet18` (rows named `@resnet18`), `{VIT}` (rows named `@{VIT}`); each row" in board
