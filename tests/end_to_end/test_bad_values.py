"""Values that cannot be meant are refused before any work, in one line that names the value and the fix."""

import pytest
import torch
from typer.testing import CliRunner

from ssl_bench.config import resolve_config
from ssl_bench.errors import ConfigError
from ssl_bench.launchers import create_launcher
from ssl_bench.plugins import get_registry

runner = CliRunner()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"seeds": True}, r"seeds must be a whole number from 1 to 1000; got True"),
        ({"seeds": 100_000_000_000}, r"seeds must be a whole number from 1 to 1000; got 100000000000"),
        ({"data_root": 5}, r"data_root must be a folder's path, e.g. data_root = \"~/data\"; got 5"),
        ({"methods": {"simclr": {"temperature": -1.0}}}, r"simclr option temperature must be positive, got -1.0"),
        ({"methods": {"moco": {"momentum": 1.5}}}, r"moco option momentum must lie in \[0, 1\], got 1.5"),
        (
            {"methods": {"swav": {"queue_start_fraction": 1.5}}},
            r"swav option queue_start_fraction must lie in \[0, 1\]",
        ),
    ],
)
def test_values_that_cannot_be_meant_are_refused(values, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        resolve_config({"tasks": ["synthetic-lung"], **values}, {"results": str(tmp_path)}, get_registry())


@pytest.mark.parametrize("text", ["abc", "-5", "nan"])
def test_a_checkpoint_interval_that_is_not_a_number_of_seconds_is_refused_up_front(text, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_BENCH_CHECKPOINT_SECONDS", text)
    with pytest.raises(
        ConfigError, match=f"SSL_BENCH_CHECKPOINT_SECONDS must be a number of seconds >= 0 .*got '{text}'"
    ):
        resolve_config({"methods": ["scratch"]}, {"results": str(tmp_path)}, get_registry())


@pytest.mark.parametrize("workers", [0, -2])
def test_workers_below_one_are_refused(workers, tmp_path):
    config = resolve_config({"methods": ["scratch"]}, {"results": str(tmp_path)}, get_registry())
    with pytest.raises(ConfigError, match=f"--workers must be at least 1, got {workers}"):
        create_launcher(config, workers=workers)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_gpus_on_a_machine_without_cuda_are_refused(tmp_path):
    config = resolve_config({"methods": ["scratch"], "executor": "local"}, {"results": str(tmp_path)}, get_registry())
    with pytest.raises(ConfigError, match="--gpus 0 names GPUs, but torch sees no CUDA device: drop --gpus"):
        create_launcher(config, gpus=["0"])
