"""Cached artefacts carry a checksum and are checked where they are used: size and mtime first, the hash after."""

import errno
import hashlib
import json
import os

import pytest
import torch
from records import record

from ssl_bench.record import MetricRecord, UnreadableRecord, read_record, write_record
from ssl_bench.results import (
    CannotWrite,
    DamagedArtefact,
    artefact_problem,
    checksum_path,
    load_torch,
    remove_checked,
    resume_checkpoint,
    save_torch,
    write_atomic,
)


def _flip_a_byte(path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_checked_artefact_passes_until_its_bytes_change(tmp_path):
    path = save_torch(tmp_path / "model.pt", {"w": torch.arange(1000.0)})
    recorded = json.loads(checksum_path(path).read_text())
    assert (
        recorded["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and recorded["size"] == path.stat().st_size
    )
    assert artefact_problem(path) is None
    # Touched (a copy, a backup restore): the same bytes pass, and the new mtime is recorded for a cheap check.
    os.utime(path, ns=(1, 1))
    assert artefact_problem(path) is None and json.loads(checksum_path(path).read_text())["mtime_ns"] == 1
    _flip_a_byte(path)
    assert artefact_problem(path) == "changed since it was written (its checksum differs)"
    with pytest.raises(DamagedArtefact, match=r"model\.pt changed since it was written"):
        load_torch(path, weights_only=True)


def test_an_artefact_without_its_checksum_or_file_is_not_trusted(tmp_path):
    path = save_torch(tmp_path / "model.pt", {"w": torch.ones(3)})
    checksum_path(path).write_text("{not json")
    assert artefact_problem(path) == "has an unreadable checksum (model.pt.checksum.json)"
    checksum_path(path).unlink()
    assert artefact_problem(path) == "has no checksum beside it (model.pt.checksum.json)"
    remove_checked(path)
    assert artefact_problem(path) == "is missing" and not checksum_path(path).exists()


def test_a_damaged_checkpoint_is_removed_and_the_work_starts_over(tmp_path):
    path = save_torch(tmp_path / "fit.pt", {"epoch": 3})
    assert resume_checkpoint(path, torch.device("cpu")) == {"epoch": 3}
    _flip_a_byte(path)
    with pytest.warns(UserWarning, match=r"fit\.pt changed since it was written.*: starting over instead of resuming"):
        assert resume_checkpoint(path, torch.device("cpu")) is None
    assert not path.exists() and not checksum_path(path).exists()
    assert resume_checkpoint(path, torch.device("cpu")) is None  # nothing to resume: no warning, no error


def test_a_metric_outside_its_declared_range_makes_the_record_unreadable(tmp_path):
    good = record("job1", scores=[0.6, 0.7])
    path = write_record(tmp_path / "runs" / good.job_id / "result.json", good)
    data = json.loads(path.read_text())
    data["metrics"]["dice"].update(low=0.0, high=1.0)
    path.write_text(json.dumps(data))
    assert read_record(path).metrics["dice"].high == 1.0
    data["metrics"]["dice"]["per_image"][1] = 5.0  # valid JSON, valid types: only the range says it is wrong
    path.write_text(json.dumps(data))
    with pytest.raises(
        UnreadableRecord,
        match=r"metrics\.dice: 1 value\(s\) outside the metric's declared range \[0\.0, 1\.0\], e\.g\. 5\.0",
    ):
        read_record(path)
    # NaN (undefined for an image) lies in every range; a bound on one side leaves the other open.
    assert MetricRecord(True, per_image=[float("nan")], ids=["a"], low=0.0, high=1.0).per_image
    assert MetricRecord(False, value=123.0, low=0.0).value == 123.0
    with pytest.raises(ValueError, match="outside"):
        MetricRecord(False, value=-0.5, low=0.0)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            errno.ENOSPC,
            r"no space left to write .*big\.bin \(0\.0 MB written when the disk filled, [\d.]+ MB free\): "
            r"free some space and run the same command again; nothing finished is lost",
        ),
        (errno.EROFS, r"cannot write .*big\.bin: Read-only file system; make .* writable, or copy the results folder"),
    ],
)
def test_a_full_disk_or_a_read_only_folder_is_one_clear_error_and_leaves_no_temporary(tmp_path, code, message):
    def fail(stream):
        stream.write(b"x" * 1000)
        raise OSError(code, os.strerror(code))

    with pytest.raises(CannotWrite, match=message):
        write_atomic(tmp_path / "big.bin", fail)
    assert list(tmp_path.iterdir()) == []


def test_a_write_interrupted_by_a_signal_is_a_stop_not_a_disk_error(tmp_path):
    def interrupted(stream):
        raise OSError(errno.EINTR, os.strerror(errno.EINTR))  # what numpy's C write says when a signal lands

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "pool.npy", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_a_kill_between_the_checksum_and_the_rename_leaves_a_version_that_passes(tmp_path, monkeypatch):
    path = save_torch(tmp_path / "state.pt", {"step": 1})
    real_replace = os.replace

    def killed_before_the_rename(source, target):
        if str(target) == str(path):
            raise KeyboardInterrupt  # the new checksum is written; the new file never takes the old one's place
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", killed_before_the_rename)
    with pytest.raises(KeyboardInterrupt):
        save_torch(path, {"step": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    assert json.loads(checksum_path(path).read_text())["sha256"] != hashlib.sha256(path.read_bytes()).hexdigest()
    assert artefact_problem(path) is None and load_torch(path, weights_only=True) == {"step": 1}
    # Only the version the last checksum replaced is trusted, not older ones.
    three = save_torch(path, {"step": 3}).read_bytes()
    save_torch(path, {"step": 4})
    save_torch(path, {"step": 5})
    path.write_bytes(three)
    assert artefact_problem(path) == "changed since it was written (its checksum differs)"
