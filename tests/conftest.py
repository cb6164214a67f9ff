"""Shared fixtures: installed test distributions, the shared real data, a clean plugin registry."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

from ssl_bench.config import tomllib  # tomli on Python 3.10

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLE_PLUGIN = REPO / "examples" / "ssl-bench-example-plugin"


def pytest_collection_modifyitems(config, items):
    """Without a CUDA device, tests marked ``gpu`` are deselected (reported as such, never as passed)."""
    import torch

    if torch.cuda.is_available():
        return
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]


def shared_data(name: str) -> Path:
    """A folder of ../shared/data; skips when absent, except under CI=true where absence fails."""
    path = SHARED_DATA / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing, and CI must have ../shared/data")
        pytest.skip(f"{path} is absent (the real-data copy beside the repo); nothing to test on")
    return path


def write_distribution(root: Path, name: str, version: str, entry_points: dict[str, str]) -> Path:
    """An installed distribution as pip leaves it: ``<name>-<version>.dist-info`` with its entry points."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[ssl_bench]\n{lines}")
    return root


def install_plugin(site: Path, module: str, source: str, entry_point: str) -> None:
    """``source`` installed in ``site`` as module ``module``, registered as ``entry_point`` of its own distribution
    (named after the module); ``site`` forgets it after the test."""
    (site / f"{module}.py").write_text(source)
    write_distribution(site, module.replace("_", "-"), "1.0", {entry_point: module})


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh folder on sys.path (and PYTHONPATH, for subprocesses) to install test distributions into."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    yield root
    importlib.invalidate_caches()
    for module in [m for m in sys.modules if m.startswith("sbtest_")]:
        del sys.modules[module]


@pytest.fixture
def example_plugin(site):
    """The repo's example plugin package, installed as a distribution on the path with its own entry points."""
    project = tomllib.loads((EXAMPLE_PLUGIN / "pyproject.toml").read_text())
    modules = project["tool"]["setuptools"]["py-modules"]
    for module in modules:
        (site / f"{module}.py").write_text((EXAMPLE_PLUGIN / f"{module}.py").read_text())
    entry_points = project["project"]["entry-points"]["ssl_bench"]
    write_distribution(site, project["project"]["name"], project["project"]["version"], entry_points)
    yield site
    for module in modules:
        sys.modules.pop(module, None)


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch, tmp_path):
    """Each test sees the plugins installed at that moment, and caches nothing outside tmp_path."""
    from ssl_bench.plugins import forget_registries

    monkeypatch.setenv("SSL_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SSL_BENCH_PLUGINS", raising=False)
    monkeypatch.delenv("SSL_BENCH_DISABLE_PLUGINS", raising=False)
    forget_registries()
    yield
    forget_registries()
