"""Plugin discovery through real entry points (distributions on sys.path), and failure isolation."""

import ast
import importlib.metadata
import re
from pathlib import Path

import pytest
import ssl_bench_methods
import ssl_bench_protocols
import ssl_bench_tasks
from conftest import write_distribution

from ssl_bench.errors import PluginError
from ssl_bench.plugins import build_registry, get_registry

GOOD = """
from ssl_bench.api import hookimpl, Method, Stage

class Good(Method):
    name = "sbtest-good"
    description = "a test method"

    def stages(self, scale):
        return []

@hookimpl
def ssl_bench_register_methods(register):
    register(Good)
"""

BROKEN_IMPORT = "import a_module_that_does_not_exist\n"

BAD_REGISTRATION = """
from ssl_bench.api import hookimpl

@hookimpl
def ssl_bench_register_methods(register):
    register(42)
"""

DUPLICATE = """
from ssl_bench.api import hookimpl, Method

class Scratch(Method):
    name = "scratch"
    description = "claims a name that is taken"

    def stages(self, scale):
        return []

@hookimpl
def ssl_bench_register_methods(register):
    register(Scratch)
"""


def _install(site, modules: dict[str, str]) -> None:
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)
    write_distribution(site, "sbtest-plugins", "0.3", {name.removeprefix("sbtest_"): name for name in modules})


def _registry():
    return build_registry(importlib.metadata.entry_points(group="ssl_bench"))


def test_builtins_are_found_through_their_entry_points():
    registry = get_registry()
    assert {"scratch", "simclr"} <= set(registry.methods)
    assert {"synthetic-vessel", "synthetic-lung", "drive-vessel"} <= set(registry.tasks)
    assert {"synthetic-fundus", "synthetic-cxr"} <= set(registry.pools)
    owner = next(p for p in registry.plugins if p.name == "simclr")
    assert (owner.distribution, owner.registered["methods"], owner.error) == ("ssl-bench", ["simclr"], None)
    assert {"frozen", "finetune", "linear-probe"} <= set(registry.protocols)


def test_a_third_party_distribution_is_discovered(site):
    _install(site, {"sbtest_good": GOOD})
    registry = _registry()
    assert registry.method("sbtest-good").description == "a test method"
    info = next(p for p in registry.plugins if p.name == "good")
    assert (info.distribution, info.version, info.registered["methods"]) == ("sbtest-plugins", "0.3", ["sbtest-good"])
    assert registry.plugin_version("methods", "sbtest-good") == "sbtest-plugins==0.3"


def test_broken_plugins_are_reported_and_the_rest_keep_working(site):
    _install(
        site,
        {"sbtest_good": GOOD, "sbtest_broken": BROKEN_IMPORT, "sbtest_bad": BAD_REGISTRATION, "sbtest_dup": DUPLICATE},
    )
    registry = _registry()
    errors = {p.name: p.error for p in registry.plugins}
    assert "a_module_that_does_not_exist" in errors["broken"]
    assert "expected a subclass of ssl_bench.api.Method" in errors["bad"]
    assert errors["good"] is None and "sbtest-good" in registry.methods
    assert registry.methods["simclr"].name == "simclr"


def test_a_name_two_plugins_register_is_refused_naming_both(site):
    _install(site, {"sbtest_dup": DUPLICATE})
    registry = _registry()
    # Neither plugin fails, and the clash is not settled by load order: the name is refused, naming both.
    assert {p.name: p.error for p in registry.plugins}["dup"] is None
    assert "scratch" not in registry.methods
    with pytest.raises(PluginError) as error:
        registry.method("scratch")
    message = str(error.value)
    assert "scratch (ssl-bench" in message and "dup (sbtest-plugins 0.3)" in message
    assert "SSL_BENCH_DISABLE_PLUGINS=" in message
    # The same name as another kind is no clash: a task may share a method's name.
    assert "synthetic-vessel" in registry.tasks


def test_a_failed_plugin_is_named_when_a_name_is_not_found(site):
    _install(site, {"sbtest_broken": BROKEN_IMPORT})
    with pytest.raises(PluginError, match=r"Plugin broken \(sbtest-plugins 0.3\) failed to load") as error:
        _registry().method("sbtest-good")
    assert "a_module_that_does_not_exist" in str(error.value)


def test_allow_and_deny_lists(site, monkeypatch):
    _install(site, {"sbtest_good": GOOD})
    monkeypatch.setenv("SSL_BENCH_PLUGINS", "good,scratch")
    assert set(_registry().methods) == {"sbtest-good", "scratch"}
    monkeypatch.delenv("SSL_BENCH_PLUGINS")
    monkeypatch.setenv("SSL_BENCH_DISABLE_PLUGINS", "good, simclr")
    methods = set(_registry().methods)
    assert "scratch" in methods and not {"sbtest-good", "simclr"} & methods
    with pytest.raises(PluginError, match="SSL_BENCH_DISABLE_PLUGINS leaves out good, simclr"):
        _registry().method("simclr")


def test_an_allow_list_naming_no_installed_plugin_says_so_when_a_name_is_not_found(monkeypatch):
    monkeypatch.setenv("SSL_BENCH_PLUGINS", "nonexistent")
    with pytest.raises(
        PluginError,
        match=r"Unknown method 'scratch'\. SSL_BENCH_PLUGINS loads only the plugins it "
        r"names \(nonexistent\), and no installed plugin is called nonexistent; the installed plugins "
        r"are .*scratch",
    ):
        _registry().method("scratch")


def test_unknown_names_suggest_close_matches():
    with pytest.raises(PluginError, match="Did you mean simclr"):
        get_registry().method("simclrr")


# --- Module structure: plugins depend on ssl_bench.api alone, never on the core's internals or on each other ---

PLUGIN_PACKAGES = (ssl_bench_methods, ssl_bench_tasks, ssl_bench_protocols)
PLUGIN_MODULES = sorted(path for package in PLUGIN_PACKAGES for path in Path(package.__path__[0]).glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    relative = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level]
    assert not relative, f"{path.name}: import shared modules by their absolute name"
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}


@pytest.mark.parametrize("path", PLUGIN_MODULES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_a_plugin_module_imports_only_the_api_and_its_own_packages_shared_modules(path: Path) -> None:
    plugin_packages = {package.__name__ for package in PLUGIN_PACKAGES}
    for module in imported_modules(path):
        package, _, rest = module.partition(".")
        if package == "ssl_bench":
            assert module.split(".")[:2] == ["ssl_bench", "api"], f"{path.name} imports {module}"
        elif package in plugin_packages:
            assert package == path.parent.name, f"{path.name} imports another plugin package's {module}"
            assert rest.startswith("_"), f"{path.name} imports the plugin module {module}"


def test_the_api_names_its_version_and_every_name_it_exports_resolves() -> None:
    import ssl_bench.api as api

    assert re.fullmatch(r"\d+\.\d+", api.API_VERSION)
    modules = [api, *(getattr(api, name) for name in ("augment", "data", "nets", "regions", "supervised"))]
    for module in modules:
        assert len(set(module.__all__)) == len(module.__all__), module.__name__
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
    # Names no plugin needs are not part of the contract: the supervised loop's internals stay in the core.
    exported = {name for module in modules for name in module.__all__}
    assert not {"SegmentationProblem", "fresh_model", "split_train_val", "labelled_rows"} & exported


def test_a_building_block_asked_for_by_its_1x_flat_name_says_where_it_moved() -> None:
    import ssl_bench.api as api

    assert "UNet" not in api.__all__
    with pytest.raises(AttributeError, match=r"from ssl_bench\.api\.nets import UNet"):
        api.UNet  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'Unet'"):
        api.Unet  # noqa: B018 (an unknown name is still an error)


STOPPED_IMPORT = """
from ssl_bench.stopping import request_stop

try:
    request_stop(15, None)  # a SIGTERM while this module is imported...
except KeyboardInterrupt:
    raise ImportError("a library turned the stop into this")  # ...that a library turns into its own error
"""


def test_a_stop_that_lands_in_a_plugins_import_stops_and_does_not_fail_the_plugin(site):
    from ssl_bench.stopping import stops_on_signals

    _install(site, {"sbtest_stopped": STOPPED_IMPORT})
    with pytest.raises(KeyboardInterrupt), stops_on_signals():
        _registry()
    # Without a stop, an ImportError is the plugin's own: reported and left out (the broken-import tests above).
