"""Every cached artefact that is damaged or stale is made again, said in one line, to the same final numbers."""

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_bench.config import resolve_config
from ssl_bench.engine import Engine
from ssl_bench.planning import build_plan
from ssl_bench.plugins import get_registry
from ssl_bench.pools import prepare_pool, resolve_pool
from ssl_bench.record import read_record
from ssl_bench.results import pretrain_dir, result_path

TINY = {"epochs": 2, "image_size": 32}


def _config(results: Path):
    """simclr, frozen then finetune (which continues from frozen's selected model), small."""
    values = {"methods": {"simclr": {}}, "tasks": ["synthetic-vessel"], "protocols": {"frozen": TINY, "finetune": TINY}}
    return resolve_config(values, {"results": str(results)}, get_registry())


def _run(results: Path) -> tuple[dict[str, list[float]], list[str]]:
    """Runs :func:`_config`: dice per job, and what was said."""
    config = _config(results)
    said: list[str] = []
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        summary = Engine(config, torch.device("cpu"), progress=False, echo=said.append).run(
            build_plan(config, get_registry(), echo=said.append)
        )
    assert not summary.failed, [failure.error for failure in summary.failed]
    dice = {
        path.parent.name: read_record(path).metrics["dice"].per_image for path in results.glob("runs/*/result.json")
    }
    return dice, said + [str(warning.message) for warning in warned]


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _garble(path: Path) -> None:
    path.write_text('{"seconds": "garbage"')


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict[str, list[float]]]:
    """One finished run, copied by each test before it damages something."""
    results = tmp_path_factory.mktemp("finished")
    dice, _ = _run(results)
    return results, dice


def _copy(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "results", copy_function=shutil.copy2))


# (artefact, how it is damaged, what else is removed so that a job needs it again, the line said)
CASES = {
    "pool": ("cache/pools/*.npy", _flip_a_byte, None, r"\.npy changed since it was written .*: decoding pool"),
    "encoder": (
        "cache/pretrain/*/encoder.pt",
        _flip_a_byte,
        "finetune",
        r"encoder\.pt changed since it was written .*: pretraining simclr again",
    ),
    "pretraining record": (
        "cache/pretrain/*/pretraining.json",
        _garble,
        "finetune",
        r"pretraining\.json is unreadable: pretraining simclr again",
    ),
    "selected model": (
        "runs/*/selected_model.pt",
        _flip_a_byte,
        None,
        r"selected_model\.pt changed since it was written .*: running job \w+ \(simclr, frozen.*\) again",
    ),
    "result record": ("runs/*/result.json", _garble, None, r"result file .*result\.json is unreadable or corrupt"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_damaged_artefact_is_made_again_with_one_line_and_the_same_numbers(finished, tmp_path, case):
    finished_results, clean = finished
    results = _copy(finished_results, tmp_path)
    pattern, damage, needed_by, line = CASES[case]
    damage(sorted(results.glob(pattern))[0])
    if needed_by:  # a finished job never loads the encoder again: remove one that needs it
        for path in results.glob("runs/*/result.json"):
            if read_record(path).protocol.name == needed_by:
                path.unlink()
    dice, said = _run(results)
    assert sum(bool(re.search(line, text)) for text in said) == 1, said
    assert dice == clean


def test_a_folder_pool_whose_images_changed_is_decoded_again(tmp_path):
    folder = tmp_path / "pool"
    folder.mkdir()
    for index in range(6):
        Image.fromarray(np.full((8, 8, 3), index * 10, np.uint8)).save(folder / f"{index}.png")
    registry, cache = get_registry(), tmp_path / "cache"
    first = prepare_pool(resolve_pool("synthetic-fundus", registry, None, {"synthetic-fundus": folder}), cache)
    assert len(first.images) == 6
    for index in range(8):  # every image replaced, two added
        Image.fromarray(np.full((8, 8, 3), 200 + index, np.uint8)).save(folder / f"{index}.png")
    again = prepare_pool(resolve_pool("synthetic-fundus", registry, None, {"synthetic-fundus": folder}), cache)
    assert len(again.images) == 8 and again.fingerprint != first.fingerprint
    assert sorted(np.asarray(again.images)[:, 0, 0, 0].tolist()) == list(range(200, 208))


def test_locks_left_by_a_dead_worker_are_taken_over_and_said(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is now free: the lock's holder is gone
    holder = {"host": socket.gethostname(), "pid": dead.pid, "since": time.time(), "heartbeat": time.time()}
    first = build_plan(_config(tmp_path), get_registry(), echo=lambda line: None).jobs[0]
    for folder in (pretrain_dir(tmp_path, first.pretraining.id), result_path(tmp_path, first.id).parent):
        folder.mkdir(parents=True)
        (folder / "lock").write_text(json.dumps(holder))
    _, said = _run(tmp_path)
    taken = [line for line in said if f"took over the lock of {socket.gethostname()} pid {dead.pid}" in line]
    assert [line.split(":")[0] for line in taken] == [f"job {first.id}", f"pretraining simclr ({first.pretraining.id})"]
