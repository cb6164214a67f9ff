"""The result record: written and read back exactly, and refused with the file's name when it is not a record."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from ssl_bench.errors import DataError
from ssl_bench.protocol import Selection
from ssl_bench.record import (
    SCHEMA_VERSION,
    Compute,
    MetricRecord,
    PoolRecord,
    PretrainingRecord,
    ProtocolRecord,
    ResultRecord,
    read_record,
    write_record,
)


def full_record(**changes: object) -> ResultRecord:
    """A record with every optional field set to something other than its default."""
    base = ResultRecord(
        job_id="job-0123abcd",
        spec={"variant": "simclr(tau=0.2)", "seeds": [0, 1], "nested": {"lr": 0.001, "flip": True, "none": None}},
        method="simclr",
        variant="simclr(tau=0.2)",
        pretrained=True,
        encoder="resnet18",
        pool=PoolRecord(id="fundus", fingerprint="0f" * 32),
        task="drive",
        task_kind="segmentation",
        task_modality="fundus",
        data_fingerprint="da7a" * 4,
        protocol=ProtocolRecord(
            name="finetune",
            label="finetune(lr=0.0001)",
            version="2",
            settings={"lr": 0.0001, "epochs": 40},
            frozen_encoder=False,
            continued_from="job-frozen",
        ),
        label_fraction=0.2,
        seed_index=3,
        seed=987654321,
        budget="paper",
        headline_metric="dice",
        metrics={
            "dice": MetricRecord(higher_is_better=True, per_image=[0.5, 0.75, None], ids=["a", "b", "c"]),
            "hd95": MetricRecord(higher_is_better=False, per_image=[3.5, 1.25, 2.0], ids=["a", "b", "c"]),
            "auc": MetricRecord(higher_is_better=True, value=0.875, low=0.0, high=1.0),
        },
        selection=Selection(epoch=17, val_loss=0.125, val_loss_name="dice+bce"),
        compute=Compute(
            device="cuda",
            protocol_seconds=61.5,
            peak_memory_mb=2048.0,
            train_images_per_second=120.25,
            pretrain_seconds=3600.0,
            pretrain_images_per_second=400.5,
            pretrain_views_per_second=801.0,
            pretrain_source_images=35126,
            pretrain_peak_memory_mb=9000.0,
        ),
        versions={"ssl_bench": "0.1", "torch": "2.3", "plugins": ["a", "b"]},
        config_hash="c0ffee" * 2,
        git_commit="1234567890abcdef1234567890abcdef12345678",
        started="2024-05-01T10:00:00+00:00",
        finished="2024-05-01T10:01:01+00:00",
        unix_time=1714557661.25,
    )
    return dataclasses.replace(base, **changes)


def minimal_record() -> ResultRecord:
    """A scratch record: no pool, no git commit, no selected epoch, every optional compute field unset."""
    return full_record(
        method="scratch",
        variant="scratch",
        pretrained=False,
        pool=None,
        protocol=ProtocolRecord(name="frozen", label="frozen", version="1", settings={}, frozen_encoder=True),
        selection=Selection(epoch=None, val_loss=None, val_loss_name="bce"),
        compute=Compute(device="cpu", protocol_seconds=2.0),
        git_commit=None,
    )


def path_of(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "job" / "result.json"


# --- round trip ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [full_record, minimal_record], ids=["full", "minimal"])
def test_write_then_read_gives_the_same_record(tmp_path: Path, make: Callable[[], ResultRecord]) -> None:
    record = make()
    path = write_record(path_of(tmp_path), record)
    assert path == path_of(tmp_path)
    back = read_record(path)
    assert back == record
    assert type(back.metrics["dice"]) is MetricRecord and type(back.selection) is Selection
    assert back.schema_version == SCHEMA_VERSION == 3


def test_the_file_is_plain_json_with_the_schema_version(tmp_path: Path) -> None:
    data = json.loads(write_record(path_of(tmp_path), full_record()).read_text(encoding="utf-8"))
    assert data["schema_version"] == 3
    assert data["pool"] == {"id": "fundus", "fingerprint": "0f" * 32}
    assert data["metrics"]["dice"]["per_image"] == [0.5, 0.75, None]
    assert data["metrics"]["auc"] == {
        "higher_is_better": True,
        "per_image": None,
        "ids": None,
        "value": 0.875,
        "low": 0.0,
        "high": 1.0,
    }


def test_a_nan_score_survives_as_nan(tmp_path: Path) -> None:
    nan_dice = MetricRecord(higher_is_better=True, per_image=[0.5, math.nan, None], ids=["a", "b", "c"])
    nan_auc = MetricRecord(higher_is_better=True, value=math.nan)
    record = full_record(metrics={"dice": nan_dice, "auc": nan_auc})
    path = write_record(path_of(tmp_path), record)
    # the writer emits JavaScript's NaN token (Python's json reads it; strict JSON has no NaN)
    assert '"value": NaN' in path.read_text(encoding="utf-8")
    back = read_record(path)
    dice = back.metrics["dice"].per_image
    assert dice[0] == 0.5 and math.isnan(dice[1]) and dice[2] is None  # NaN stays NaN, null stays None
    assert math.isnan(back.metrics["auc"].value)
    # NaN != NaN, so compare everything else with the NaNs set aside
    assert back.metrics["dice"].ids == ["a", "b", "c"]
    without_nan = {"dice": MetricRecord(higher_is_better=True, per_image=[0.0], ids=["x"])}
    assert dataclasses.replace(back, metrics=without_nan) == dataclasses.replace(record, metrics=without_nan)


def test_an_int_where_a_float_is_expected_is_accepted_as_float(tmp_path: Path) -> None:
    path = write_record(path_of(tmp_path), full_record())
    data = json.loads(path.read_text(encoding="utf-8"))
    data["label_fraction"] = 1
    data["unix_time"] = 1714557661
    data["metrics"]["dice"]["per_image"] = [1, 0, None]
    data["compute"]["protocol_seconds"] = 61
    path.write_text(json.dumps(data), encoding="utf-8")
    back = read_record(path)
    assert back.label_fraction == 1.0 and type(back.label_fraction) is float
    assert back.unix_time == 1714557661.0 and type(back.unix_time) is float
    assert back.metrics["dice"].per_image == [1.0, 0.0, None]
    assert [type(v) for v in back.metrics["dice"].per_image[:2]] == [float, float]
    assert type(back.compute.protocol_seconds) is float


# --- refusals ------------------------------------------------------------------------------------


def edited(tmp_path: Path, edit: Callable[[dict], None]) -> Path:
    """A valid record's file with ``edit`` applied to its parsed JSON."""
    path = write_record(path_of(tmp_path), full_record())
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def refusal(path: Path) -> str:
    with pytest.raises(DataError) as caught:
        read_record(path)
    message = str(caught.value)
    assert str(path) in message
    assert "delete" in message and "rerun" in message  # the fix
    return message


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    path = write_record(path_of(tmp_path), full_record())
    path.write_text(path.read_text(encoding="utf-8")[:300], encoding="utf-8")
    assert "corrupt" in refusal(path)


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = path_of(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"schema_version": 3, "job_id": "\xff"}')
    assert "corrupt" in refusal(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    assert "unreadable" in refusal(path_of(tmp_path))


@pytest.mark.parametrize(
    ("version", "shown"),
    [(2, "schema_version 2"), (4, "schema_version 4"), ("3", "schema_version '3'"), (None, "schema_version None")],
)
def test_another_schema_version_is_refused(tmp_path: Path, version: object, shown: str) -> None:
    path = edited(tmp_path, lambda data: data.update(schema_version=version))
    message = refusal(path)
    assert shown in message and "reads 3" in message


def test_a_file_without_schema_version_is_refused(tmp_path: Path) -> None:
    path = edited(tmp_path, lambda data: data.pop("schema_version"))
    assert "schema_version None" in refusal(path)


def test_a_pretraining_json_from_before_it_was_versioned_still_marks_a_finished_pretraining(tmp_path: Path) -> None:
    # The fields, as the runner wrote them untyped and without schema_version: the cached encoder stays valid.
    legacy = {
        "spec": {"method": "simclr"},
        "seconds": 12.5,
        "source_images": 320,
        "images_per_second": 25.6,
        "views_per_second": 51.2,
        "peak_memory_mb": None,
        "resumed_from_step": 0,
        "val_losses": [0.9, None],
        "selected_epoch": None,
        "device": "cpu",
        "torch_threads": 2,
    }
    path = tmp_path / "pretraining.json"
    path.write_text(json.dumps(legacy))
    record = read_record(path, PretrainingRecord)
    assert (record.seconds, record.val_losses, record.schema_version) == (12.5, [0.9, None], SCHEMA_VERSION)
    path.write_text(json.dumps({**legacy, "schema_version": 1}))  # a version it does carry is still checked
    with pytest.raises(DataError, match="schema_version 1"):
        read_record(path, PretrainingRecord)


def test_a_json_value_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = path_of(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("[2]", encoding="utf-8")
    assert "schema_version None" in refusal(path)


def _drop(*keys: str) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        for key in keys[:-1]:
            data = data[key]
        del data[keys[-1]]

    return edit


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        (("task",), "lacks task"),
        (("metrics",), "lacks metrics"),
        (("protocol", "frozen_encoder"), "protocol lacks frozen_encoder"),
        (("metrics", "dice", "higher_is_better"), "metrics.dice lacks higher_is_better"),
        (("compute", "device"), "compute lacks device"),
    ],
)
def test_a_missing_field_is_refused_and_named(tmp_path: Path, keys: tuple[str, ...], named: str) -> None:
    assert named in refusal(edited(tmp_path, _drop(*keys)))


def test_a_missing_optional_field_takes_its_default(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        del data["compute"]["pretrain_source_images"], data["protocol"]["continued_from"]

    path = edited(tmp_path, edit)
    back = read_record(path)
    assert back.compute.pretrain_source_images is None and back.protocol.continued_from is None


def _set(value: object, *keys: str) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("value", "keys", "named"),
    [
        ("3", ("seed_index",), "seed_index must be int"),
        (3.0, ("seed_index",), "seed_index must be int"),
        (True, ("seed_index",), "seed_index must be int"),  # JSON true is no integer here
        ("x", ("label_fraction",), "label_fraction must be float"),
        (False, ("label_fraction",), "label_fraction must be float"),
        (1, ("pretrained",), "pretrained must be bool"),
        ("0.5", ("metrics", "dice", "per_image"), "metrics.dice.per_image must be a list"),
        (["0.5"], ("metrics", "dice", "per_image"), "metrics.dice.per_image[0] must be float"),
        ([1, 2], ("metrics", "dice", "ids"), "metrics.dice.ids[0] must be str"),
        ("yes", ("metrics", "auc", "higher_is_better"), "metrics.auc.higher_is_better must be bool"),
        ([0.5], ("metrics",), "metrics must be an object"),
        ("fundus", ("pool",), "pool must be an object"),
        (17.5, ("selection", "epoch"), "selection.epoch must be int"),
        (None, ("job_id",), "job_id must be str"),
        ("cuda", ("compute",), "compute must be an object"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_and_named(
    tmp_path: Path, value: object, keys: tuple[str, ...], named: str
) -> None:
    assert named in refusal(edited(tmp_path, _set(value, *keys)))


def test_a_headline_metric_not_among_the_metrics_is_refused(tmp_path: Path) -> None:
    message = refusal(edited(tmp_path, _set("iou", "headline_metric")))
    assert "headline metric 'iou'" in message and "['auc', 'dice', 'hd95']" in message


def test_a_headline_metric_not_among_the_metrics_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="headline metric 'iou'"):
        full_record(headline_metric="iou")


@pytest.mark.parametrize(
    "metric",
    [
        {"higher_is_better": True},  # neither scores nor a value
        {"higher_is_better": True, "per_image": [], "ids": []},  # no image at all
        {"higher_is_better": True, "per_image": [0.5, 0.7], "ids": ["a"]},  # one id for two scores
        {"higher_is_better": True, "per_image": [0.5], "ids": ["a"], "value": 0.9},  # both
    ],
    ids=["neither", "empty", "ids-mismatch", "both"],
)
def test_a_metric_without_exactly_one_kind_of_scores_is_refused(tmp_path: Path, metric: dict) -> None:
    assert "metrics.dice" in refusal(edited(tmp_path, _set(metric, "metrics", "dice")))
