"""Where a run's files live, and how they are written: atomically, so that a kill loses nothing finished.

What a run makes once and uses again (decoded pools, encoders, selected models, checkpoints) is written with a
checksum beside it (``<name>.checksum.json``) and checked where it is used: size and modification time first,
the content hash only when those changed. What fails the check is made again, never trusted.

Layout under the results directory (DomainBed-style: one folder per hashed job, its result the marker)::

    runs/<job_id>/result.json        one finished job (``ssl_bench.record``); its presence marks the job done
    runs/<job_id>/selected_model.pt  the selected downstream model, kept where another protocol continues from it
    runs/<job_id>/error.json         a job that failed: the error, its traceback, the phase and the spec
    runs/<job_id>/lock               a worker is running the job (``ssl_bench.locks``)
    runs/<job_id>/fit.pt             an unfinished downstream training, resumed from here
    cache/pretrain/<id>/encoder.pt   a finished pretraining, shared by every job that uses it
    cache/pretrain/<id>/state.pt     an unfinished one, resumed from here
    cache/pools/<id>.npy             a pool decoded once to uint8, memory-mapped
    <artefact>.checksum.json         beside each cached artefact: its sha256, size and mtime when last checked
    run-config.toml                  the resolved configuration of the last run
    leaderboard.{csv,md,png}
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import torch

from ssl_bench.errors import ConfigError, DataError, SslBenchWarning


def checkpoint_seconds() -> float:
    """Seconds between checkpoints of long work (``SSL_BENCH_CHECKPOINT_SECONDS``, 60 by default)."""
    text = os.environ.get("SSL_BENCH_CHECKPOINT_SECONDS", "60")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigError(f"SSL_BENCH_CHECKPOINT_SECONDS must be a number of seconds >= 0 (60 if unset); got {text!r}")
    return seconds


class CannotWrite(DataError):
    """A file could not be written: the disk is full, or the folder is read-only. Not a failure of the job that
    wrote it: the run stops, and resumes once the cause is fixed."""


def write_atomic(
    path: Path, write: Callable[[IO[bytes]], None], before_rename: Callable[[Path], None] | None = None
) -> Path:
    """Write through a temporary file in the same folder, then rename: readers never see half a file. An OS
    error (a full disk, a read-only folder) is :class:`CannotWrite`, saying which path and what to do.
    ``before_rename`` gets the finished temporary file, before it takes ``path``'s place."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes files private; results are meant to be shared
        if before_rename is not None:
            before_rename(Path(temporary))
        os.replace(temporary, path)
    except BaseException as error:
        written = Path(temporary).stat().st_size if temporary and Path(temporary).exists() else 0
        if temporary:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno == errno.EINTR:
            # A stop signal that landed inside a C-level write (numpy's tofile) surfaces as EINTR: a stop, not a
            # broken disk.
            raise KeyboardInterrupt from error
        if isinstance(error, OSError):
            raise _cannot_write(path, error, written) from error
        raise
    return path


def _cannot_write(path: Path, error: OSError, written: int) -> CannotWrite:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        existing = next(folder for folder in path.parents if folder.exists())
        free = shutil.disk_usage(existing).free
        return CannotWrite(
            f"no space left to write {path} ({written / 1e6:.1f} MB written when the disk filled, "
            f"{free / 1e6:.1f} MB free): free some space and run the same command again; nothing finished is lost"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CannotWrite(
            f"cannot write {path}: {error.strerror}; make {path.parent} writable, or copy the results folder "
            "somewhere writable and work on the copy"
        )
    return CannotWrite(f"cannot write {path}: {error}")


def write_json(path: Path, data: object) -> Path:
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n"
    return write_atomic(path, lambda stream: stream.write(text.encode()))


def write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda stream: stream.write(text.encode()))


@dataclass(frozen=True)
class Checksum:
    """A file's content hash, and the size and modification time at which it was last hashed. ``previous`` is
    the hash of the version it replaced: a kill between writing the checksum and renaming the new file into place
    leaves that version, which is whole and so still trusted."""

    sha256: str
    size: int
    mtime_ns: int
    previous: str | None = None

    @classmethod
    def of(cls, path: Path, previous: str | None = None) -> Checksum:
        with path.open("rb") as stream:
            sha256 = hashlib.file_digest(stream, "sha256").hexdigest()
        stat = path.stat()
        return cls(sha256, stat.st_size, stat.st_mtime_ns, previous)


class DamagedArtefact(DataError):
    """A cached artefact is missing its checksum, changed since it was written, or cannot be read."""


def checksum_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.checksum.json")


def write_checked(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """:func:`write_atomic` with the file's checksum beside it, written before the file takes its place (renaming
    keeps its size and mtime), and naming the version it replaces: a kill at any point leaves a file that passes."""

    def record_checksum(temporary: Path) -> None:
        replaced = _recorded(path)
        write_json(checksum_path(path), asdict(Checksum.of(temporary, replaced.sha256 if replaced else None)))

    return write_atomic(path, write, record_checksum)


def _recorded(path: Path) -> Checksum | None:
    try:
        return Checksum(**json.loads(checksum_path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def remove_checked(path: Path) -> None:
    """Remove an artefact and its checksum, if they are there."""
    path.unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)


def artefact_problem(path: Path) -> str | None:
    """Why the artefact at ``path`` cannot be trusted ("is missing", "changed since it was written", ...); None
    when it can."""
    if not path.is_file():
        return "is missing"
    if not checksum_path(path).exists():
        return f"has no checksum beside it ({checksum_path(path).name})"
    if (recorded := _recorded(path)) is None:
        return f"has an unreadable checksum ({checksum_path(path).name})"
    stat = path.stat()
    if (stat.st_size, stat.st_mtime_ns) == (recorded.size, recorded.mtime_ns):
        return None
    actual = Checksum.of(path)
    if actual.sha256 not in (recorded.sha256, recorded.previous):
        return "changed since it was written (its checksum differs)"
    with contextlib.suppress(CannotWrite):  # the same bytes, touched or copied: check cheaply next time (if writable)
        write_json(checksum_path(path), asdict(actual))
    return None


def save_torch(path: Path, obj: object) -> Path:
    return write_checked(path, lambda stream: torch.save(obj, stream))


def load_torch(path: Path, **options: Any) -> Any:
    """``torch.load(path, **options)`` of an artefact that passes its check; :class:`DamagedArtefact` if not."""
    if problem := artefact_problem(path):
        raise DamagedArtefact(f"{path} {problem}")
    try:
        return torch.load(path, **options)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise DamagedArtefact(f"{path} cannot be read ({type(error).__name__}: {error})") from error


def resume_checkpoint(path: Path, device: torch.device, *, weights_only: bool = True) -> Any:
    """The checkpoint that interrupted work left at ``path``; None when there is none, or when it is damaged (then it
    is removed and the work starts over, said in a warning)."""
    if not path.exists():
        return None
    try:
        return load_torch(path, map_location=device, weights_only=weights_only)
    except DamagedArtefact as error:
        warnings.warn(f"{error}: starting over instead of resuming", SslBenchWarning, stacklevel=2)
        remove_checked(path)
        return None


def result_path(results_dir: Path, job_id: str) -> Path:
    return results_dir / "runs" / job_id / "result.json"


def failure_path(results_dir: Path, job_id: str) -> Path:
    return results_dir / "runs" / job_id / "error.json"


def selected_model_path(results_dir: Path, job_id: str) -> Path:
    return results_dir / "runs" / job_id / "selected_model.pt"


def pretrain_dir(results_dir: Path, pretrain_id: str) -> Path:
    return results_dir / "cache" / "pretrain" / pretrain_id


def pool_cache_dir(results_dir: Path) -> Path:
    return results_dir / "cache" / "pools"
