"""The ``ssl-bench`` command line."""

from __future__ import annotations

import time
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ssl_bench.errors import DataError, SslBenchError, SslBenchWarning

_source_line_warning = warnings.formatwarning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    if issubclass(category, SslBenchWarning):
        return f"warning: {message}\n"
    return _source_line_warning(message, category, filename, lineno, line)


warnings.formatwarning = _one_line_warning

app = typer.Typer(
    help="Benchmark self-supervised pretraining on medical image segmentation.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Inspect the data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

ResultsOption = Annotated[Path, typer.Option("--results", help="Results directory.")]
RunFileOption = Annotated[Path | None, typer.Option("--config", help="A run file: its [tasks.NAME] and data_root too.")]
DataRootOption = Annotated[
    Path | None,
    typer.Option("--data-root", envvar="SSL_BENCH_DATA", help="Folder holding the datasets."),
]


class Kind(str, Enum):
    methods = "methods"
    tasks = "tasks"
    pools = "pools"
    protocols = "protocols"


def _registry(file_values: dict | None = None):
    """The installed plugins' registry, with the tasks that a run file's values (if given) define."""
    from ssl_bench.config import defined_tasks
    from ssl_bench.plugins import get_registry

    return get_registry(defined_tasks(file_values or {}))


def _with_run_file(config: Path | None, data_root: Path | None):
    """The registry with the tasks that the run file ``config`` (if any) defines, and the data root: ``data_root``,
    else the file's; a bad file exits in one line."""
    from ssl_bench.config import read_config_file

    try:
        values = read_config_file(config) if config else {}
        registry = _registry(values)
    except SslBenchError as error:
        raise _fail(error) from error
    file_root = values.get("data_root")
    return registry, data_root or (Path(file_root).expanduser() if isinstance(file_root, str) else None)


def _fail(error: Exception) -> typer.Exit:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _warn_about_plugins(registry) -> None:
    """Say up front what a run leaves out: plugins that failed to load, names that two plugins registered."""
    for info in registry.failed:
        typer.secho(f"plugin {info.label} failed to load and is left out: {info.error}", fg="yellow", err=True)
    for kind, clashes in registry.clashes.items():
        for name, owners in clashes.items():
            plugins = " and ".join(info.label for info in owners)
            typer.secho(f"{kind[:-1]} {name} is left out: both {plugins} register it", fg="yellow", err=True)


@app.command()
def plugins() -> None:
    """List installed plugins: distribution, version, what each registered, or why it failed."""
    registry = _registry()
    for info in registry.plugins:
        typer.echo(f"{info.name}  ({info.distribution} {info.version})")
        if info.error:
            typer.secho(f"  FAILED: {info.error}", fg=typer.colors.RED)
            continue
        for kind, clashes in registry.clashes.items():
            for name in (name for name, owners in clashes.items() if info in owners):
                typer.secho(f"  CLASH: {kind[:-1]} {name} is also registered by another plugin", fg="red")
        for kind, names in info.registered.items():
            if names:
                typer.echo(f"  {kind}: {', '.join(names)}")


@app.command("list")
def list_(
    kind: Annotated[Kind | None, typer.Argument(help="methods, tasks, pools or protocols (default: all).")] = None,
    data_root: DataRootOption = None,
    config: RunFileOption = None,
) -> None:
    """List methods, tasks (with whether their data was found), pretraining pools and protocols."""
    registry, data_root = _with_run_file(config, data_root)
    if kind in (None, Kind.methods):
        typer.echo("methods:")
        for name, method in registry.methods.items():
            typer.echo(f"  {name:<20} {method.description}")
    if kind in (None, Kind.tasks):
        typer.echo("tasks:")
        for name, task in registry.tasks.items():
            availability = task.availability(data_root)
            status = "available" if availability.ok else f"missing: {availability.reason}"
            typer.echo(f"  {name:<20} [{task.modality}] {task.description} ({status})")
    if kind in (None, Kind.pools):
        typer.echo("pools:")
        for name, pool in registry.pools.items():
            typer.echo(f"  {name:<20} [{pool.modality}] {pool.description}")
    if kind in (None, Kind.protocols):
        typer.echo("protocols:")
        for name, protocol in registry.protocols.items():
            typer.echo(f"  {name:<20} [{', '.join(protocol.task_kinds)}] {protocol.description}")


@app.command()
def run(
    all_: Annotated[bool, typer.Option("--all", help="Every method on every task.")] = False,
    method: Annotated[list[str] | None, typer.Option("-m", "--method", help="A method (repeatable).")] = None,
    task: Annotated[list[str] | None, typer.Option("-t", "--task", help="A task (repeatable).")] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds per method and task.")] = None,
    budget: Annotated[
        str | None,
        typer.Option(help="demo (smoke test), paper (published schedules) or matched (LD's budget for all) [demo]."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    encoder: Annotated[
        str | None, typer.Option(help="vgg16_bn_tiny (LD's, the default) or any timm model name, e.g. resnet18.")
    ] = None,
    data_root: DataRootOption = None,
    results: Annotated[Path | None, typer.Option("--results", help="Results directory [./results].")] = None,
    overwrite: Annotated[
        str | None,
        typer.Option(help="never: refuse if any result exists; missing: only absent jobs; always: redo all."),
    ] = None,
    protocol: Annotated[
        list[str] | None, typer.Option("-p", "--protocol", help="A downstream protocol (repeatable) [all].")
    ] = None,
    label_fraction: Annotated[
        list[float] | None,
        typer.Option("--label-fraction", "--label-fractions", help="Fraction of the training list used (repeatable)."),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="A TOML run configuration; flags override it.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    executor: Annotated[
        str | None,
        typer.Option(help="inline (this process), local (a pool: --workers/--gpus) or slurm (job arrays) [inline]."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine, sharing the CPU cores.")] = 1,
    gpus: Annotated[
        str | None, typer.Option(help="One worker per GPU, e.g. 0,1,2,3 (each pinned with CUDA_VISIBLE_DEVICES).")
    ] = None,
    slurm_partition: Annotated[str | None, typer.Option(help="SLURM partition [the cluster's default].")] = None,
    slurm_gpus_per_job: Annotated[int | None, typer.Option(help="GPUs per SLURM array task [0].")] = None,
    slurm_cpus_per_job: Annotated[int | None, typer.Option(help="CPUs per array task [the cluster's default].")] = None,
    slurm_mem_gb: Annotated[int | None, typer.Option(help="GB of memory per array task [the default].")] = None,
    slurm_time_minutes: Annotated[
        int | None, typer.Option(help="Time limit per array task; one that reaches it is requeued and resumes [240].")
    ] = None,
    slurm_array_parallelism: Annotated[int | None, typer.Option(help="Array tasks running at once [16].")] = None,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first failed job, with its traceback.")] = False,
    retry_failed: Annotated[bool, typer.Option(help="Run jobs that failed before (error.json) again.")] = False,
    report: Annotated[
        bool, typer.Option(help="Write the leaderboards and the report at the end (`ssl-bench report` also does).")
    ] = True,
) -> None:
    """Pretrain and score methods on tasks, then write the leaderboards."""
    from ssl_bench.board import write_boards
    from ssl_bench.config import read_config_file, resolve_config
    from ssl_bench.launchers import create_launcher
    from ssl_bench.planning import build_plan
    from ssl_bench.stopping import stops_on_signals

    if not (all_ or method or task or config):
        raise _fail(SslBenchError("say what to run: --all, -m METHOD / -t TASK, or --config FILE."))
    started = time.perf_counter()
    # SIGTERM (a scheduler's preemption) and Ctrl-C stop cleanly and resume; a stop is never a plugin's fault.
    with stops_on_signals():
        try:
            file_values = read_config_file(config) if config else {}
            registry = _registry(file_values)
            _warn_about_plugins(registry)
            overrides = {
                "methods": method or ("all" if all_ else None),
                "tasks": task or ("all" if all_ else None),
                "seeds": seeds,
                "budget": budget,
                "device": device,
                "encoder": encoder,
                "data_root": str(data_root) if data_root else None,
                "results": str(results) if results else None,
                "overwrite": overwrite,
                "label_fractions": label_fraction,
                "protocols": protocol,
                "executor": executor or ("local" if workers > 1 or gpus else None),
                "slurm": {
                    "partition": slurm_partition,
                    "gpus_per_job": slurm_gpus_per_job,
                    "cpus_per_job": slurm_cpus_per_job,
                    "mem_gb": slurm_mem_gb,
                    "time_minutes": slurm_time_minutes,
                    "array_parallelism": slurm_array_parallelism,
                },
            }
            resolved = resolve_config(file_values, overrides, registry)
            launcher = create_launcher(
                resolved,
                workers=workers,
                gpus=[gpu.strip() for gpu in gpus.split(",")] if gpus else None,
                progress=progress,
                echo=typer.echo,
                fail_fast=fail_fast,
                retry_failed=retry_failed,
            )
            plan = build_plan(resolved, registry, echo=typer.echo)
            summary = launcher.run(plan)
            finished = any(resolved.results.glob("runs/*/result.json"))
            paths = write_boards(resolved.results) if report and (finished or not summary.failed) else ()
        except SslBenchError as error:
            raise _fail(error) from None
        except KeyboardInterrupt:
            typer.secho("interrupted: run the same command again to resume; nothing finished is lost", err=True)
            raise typer.Exit(code=130) from None
    if not report:
        boards = ""
    else:
        boards = f"; wrote {', '.join(map(str, paths))}" if paths else "; no job finished, so no leaderboard"
    typer.echo(f"finished in {time.perf_counter() - started:.0f} s{boards}")
    if summary.failed:
        typer.secho(f"{len(summary.failed)} job(s) failed (their error.json says why):", fg="red", err=True)
        for failure in summary.failed:
            where = f"{failure.variant}, {failure.task}, {failure.protocol}, seed {failure.seed_index}"
            typer.secho(f"  {failure.job_id} ({where}): {failure.summary}", fg="red", err=True)
        typer.secho("fix the cause and run again with --retry-failed", err=True)
    for error in plan.left_out.values():
        typer.secho(f"left out: {error}", fg="red", err=True)
    if summary.failed or plan.left_out:
        raise typer.Exit(code=1)


@app.command()
def leaderboard(results: ResultsOption = Path("results")) -> None:
    """Rebuild the leaderboards from the stored result files alone."""
    from ssl_bench.board import Board, write_leaderboard

    try:
        paths = write_leaderboard(Board.load(results))
    except SslBenchError as error:
        raise _fail(error) from None
    for path in paths:
        typer.echo(f"wrote {path}")


@app.command()
def report(results: ResultsOption = Path("results")) -> None:
    """Write the leaderboards and the self-contained HTML report (report/index.html) from the stored results."""
    from ssl_bench.board import write_boards

    try:
        paths = write_boards(results)
    except SslBenchError as error:
        raise _fail(error) from None
    for path in paths:
        typer.echo(f"wrote {path}")


@app.command()
def export(
    method: Annotated[str, typer.Option("-m", "--method", help="The method variant, e.g. simclr(temperature=0.2).")],
    out: Annotated[Path, typer.Option(help="The safetensors file to write (a .json sidecar goes beside it).")],
    pool: Annotated[str | None, typer.Option(help="Part of the pool's id (fundus, default:cxr) when several.")] = None,
    seed_index: Annotated[int, typer.Option(help="Which seed's pretraining.")] = 0,
    results: ResultsOption = Path("results"),
) -> None:
    """Write a pretrained encoder of a results folder as safetensors, with a JSON sidecar saying what it is."""
    from ssl_bench.export import choose, export

    try:
        written = export(choose(results, method, pool, seed_index), out)
    except SslBenchError as error:
        raise _fail(error) from error
    typer.echo(f"wrote {written[0]} and {written[1]}")


@app.command()
def status(results: ResultsOption = Path("results")) -> None:
    """Per job: done, running (who holds it, since when), failed (why) or pending; and the time left."""
    from ssl_bench.config import read_config_file, resolve_config
    from ssl_bench.planning import build_plan
    from ssl_bench.status import STATES, format_seconds, plan_status, pretrainings_left, time_left

    config_path = results / "run-config.toml"
    try:
        if not config_path.exists():
            raise SslBenchError(f"{config_path} does not exist: start a run with --results {results} first")
        file_values = read_config_file(config_path)
        registry = _registry(file_values)
        config = resolve_config(file_values, {"results": str(results)}, registry, read_only=True)
        plan = build_plan(config, registry, echo=lambda line: None)
    except SslBenchError as error:
        raise _fail(error) from None
    statuses = plan_status(results, plan)
    for item in (item for item in statuses if item.state != "done"):
        job = item.job
        where = f"{job.variant}, {job.task.name}, {job.protocol_label}, seed {job.seed_index}"
        typer.echo(f"{item.state:<8} {job.id}  {where}" + (f": {item.detail}" if item.detail else ""))
    counts = {state: sum(item.state == state for item in statuses) for state in STATES}
    typer.echo(", ".join(f"{counts[state]} {state}" for state in STATES) + f" of {len(statuses)} jobs")
    left, mean = pretrainings_left(results, plan)
    if left:
        estimate = format_seconds(left * mean if mean is not None else None)
        typer.echo(f"pretrainings: {left} to go, about {estimate} (from the finished ones' mean)")
    for protocol, seconds in time_left(statuses).items():
        typer.echo(f"{protocol}: about {format_seconds(seconds)} of jobs left (at the finished jobs' mean)")


@app.command()
def check(
    plugin: Annotated[str, typer.Argument(help="Entry-point name of the plugin (see `ssl-bench plugins`).")],
    data_root: DataRootOption = None,
    steps: Annotated[
        int | None,
        typer.Option(
            min=1, help="Steps of each pretraining stage [default: 10]; more catch a loss that diverges later."
        ),
    ] = None,
) -> None:
    """Run a plugin's methods, tasks and protocols briefly on built-in data and report each contract item."""
    from ssl_bench.check import check_plugin

    try:
        items = check_plugin(_registry(), plugin, data_root, steps)
    except SslBenchError as error:
        raise _fail(error) from None
    marks = {
        "pass": typer.style("PASS", fg="green"),
        "fail": typer.style("FAIL", fg="red"),
        "skip": "SKIP",
        "untested": typer.style("NOT TESTED", fg="red"),
    }
    for item in items:
        typer.echo(f"{marks[item.status]}  {item.name}" + (f": {item.detail}" if item.detail else ""))
    counts = {status: sum(item.status == status for item in items) for status in marks}
    typer.echo(
        f"{counts['pass']} passed, {counts['fail']} failed, {counts['untested']} not tested, {counts['skip']} skipped"
    )
    if counts["fail"] or counts["untested"]:
        raise typer.Exit(code=1)


@data_app.command("check")
def data_check(data_root: DataRootOption = None, config: RunFileOption = None) -> None:
    """Per task: found or missing (and where to get it), image counts against the official ones, first problem."""
    from ssl_bench.datacheck import check_data

    reports = check_data(*_with_run_file(config, data_root))
    colours = {"found": "green", "warning": "yellow", "missing": None, "error": "red"}
    for report in reports:
        status = typer.style(f"{report.status:<7}", fg=colours[report.status])
        typer.echo(f"{status}  {report.task:<22} {report.detail}")
        for note in report.notes:
            typer.echo(" " * 32 + note)
    if any(report.status == "error" for report in reports):
        raise typer.Exit(code=1)


@data_app.command()
def preview(
    task: Annotated[
        str | None, typer.Option("-t", "--task", help="A task, drawn as read (train and test) [the phantoms].")
    ] = None,
    data_root: DataRootOption = None,
    config: RunFileOption = None,
    out: Annotated[Path | None, typer.Option(help="Where to write the PNG [results/<task or phantoms>.png].")] = None,
    size: Annotated[int, typer.Option(help="Side of each phantom in pixels.")] = 256,
    images: Annotated[int, typer.Option("-n", "--images", help="Images per split (a task) or family (phantoms).")] = 6,
) -> None:
    """Draw a task's images as ssl-bench reads them, with their masks, landmarks or labels, each titled with its
    split, id and group (patient, volume); without -t, the built-in synthetic phantoms."""
    from ssl_bench.preview import save_preview, save_task_preview
    from ssl_bench.task import load_task_data

    try:
        if task is None:
            written = save_preview(out or Path("results/phantoms.png"), size=size, n=images)
        else:
            registry, data_root = _with_run_file(config, data_root)
            chosen = registry.task(task)
            availability = chosen.availability(data_root)
            if not availability.ok:
                raise DataError(f"task {task} cannot be drawn: {availability.reason}")
            data = load_task_data(chosen, data_root)
            written = save_task_preview(out or Path(f"results/{task}.png"), data, images, chosen.image_group)
    except (SslBenchError, ValueError) as error:
        raise _fail(error) from error
    typer.echo(f"wrote {written}")
