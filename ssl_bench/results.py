"""Where a run's files live, and how they are written: atomically, so that a kill loses nothing finished.

Layout under the results directory (DomainBed-style: one folder per hashed job, its result the marker)::

    runs/<job_id>/result.json        one finished job (``ssl_bench.record``); its presence marks the job done
    runs/<job_id>/selected_model.pt  the selected downstream model, kept where another protocol continues from it
    runs/<job_id>/error.json         a job that failed: the error, its traceback, the phase and the spec
    runs/<job_id>/lock               a worker is running the job (``ssl_bench.locks``)
    runs/<job_id>/fit.pt             an unfinished downstream training, resumed from here
    cache/pretrain/<id>/encoder.pt   a finished pretraining, shared by every job that uses it
    cache/pretrain/<id>/state.pt     an unfinished one, resumed from here
    cache/pools/<id>.npy             a pool decoded once to uint8, memory-mapped
    run-config.toml                  the resolved configuration of the last run
    leaderboard.{csv,md,png}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch


def checkpoint_seconds() -> float:
    """Seconds between checkpoints of long work (``SSL_BENCH_CHECKPOINT_SECONDS``, 60 by default)."""
    return float(os.environ.get("SSL_BENCH_CHECKPOINT_SECONDS", "60"))


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes files private; results are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: object) -> Path:
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n"
    return write_atomic(path, lambda stream: stream.write(text.encode()))


def write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda stream: stream.write(text.encode()))


def save_torch(path: Path, obj: object) -> Path:
    return write_atomic(path, lambda stream: torch.save(obj, stream))


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
