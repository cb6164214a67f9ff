"""Folder tasks: a dataset that is just ``images/`` and ``masks/`` with matching stems, configured without code.

Any common image format is accepted (PNG, JPEG, BMP, TIFF, GIF, PPM/PGM, in any case); other files, such as
``ATTRIBUTION.txt``, are ignored, but a name of an image that is not a readable image (a symbolic link that
loops, an undecodable file) is an error, never dropped. Masks are read by :func:`ssl_bench.api.read_mask`: 1-,
8- or 16-bit, grey, palette or colour (a pixel's value is its largest colour channel, so a mask drawn in any
colour counts; alpha is ignored); a mask whose non-zero pixels hold one value ({0, 1}, {0, 255}, {0, 65535}) is
binary, a soft one (anti-aliased, JPEG) is kept where >= 128 of 255, and a label map ({0, 1, 2}) is refused
unless ``foreground`` names its foreground labels. Images and masks are resized to 512x512. A task whose
training or test masks are all empty is refused when it loads.

Split: the seeded split of :func:`ssl_bench_tasks._files.seeded_split` (one image in five is a test image), which
the dataset modules without an official split use too. Several images of one patient (slices, visits, eyes) must
not span train and test: ``group`` gives the rule that names an image's patient, and the split then takes whole
groups; or ``split_file`` gives the split itself.

``cxr-lungs-folder`` (``<data-root>/CXR_lungs_512``) is registered by default. Users add their own tasks in the
run file, one ``[tasks.NAME]`` table each with ``type = "folder"`` (saved with the run's ``run-config.toml``, so
``status`` and the workers know them), or for every run in a TOML file named by ``SSL_BENCH_FOLDER_TASKS`` as
``[folder_tasks.NAME]`` tables::

    [tasks.my-polyps]
    type = "folder"            # in the run file; not in a [folder_tasks.NAME] table
    folder = "polyps"          # under --data-root; holds images/ and masks/
    modality = "endoscopy"     # pretraining pools and tasks meet by modality
    channels = 3               # 1 (grey) or 3 (RGB)
    target = "polyps"          # optional, like the keys below
    mask_suffix = "_mask"      # masks/<stem>_mask.png for images/<stem>.jpg; default ""
    lung_landmarks = false     # true: masks are both lungs; lung apices and costophrenic angles become landmarks
    foreground = [1, 2]        # masks are label maps: these labels (grey levels or colour palette indices) count
    group = '^(patient\\d+)_'   # a regular expression on the file name (a TOML literal string, in single quotes):
                               # its first group names the patient (or eye, study); the split keeps groups whole
    group_file = "groups.csv"  # or: a CSV in the folder with columns id,group, one row per image
    group_by_folder = true     # or: images/<patient>/<name> and masks/<patient>/<name>, a folder per group
    split_file = "split.csv"   # or: a CSV in the folder with columns id,split (train or test), one row per image
    dataset = "My polyps"      # the name messages use; default the task's name
    description = "..."
    url = "..."
    licence = "..."
    citation = "..."

Modality ``cxr`` gets LD's X-ray protocol (no flips, rotation 30 degrees, label fractions 0.2 to 1.0); any
other flips, 180 degrees and the full training list. A task's version hashes what shapes its data (folder,
modality, channels, mask suffix, foreground, and how it is grouped or split), so that editing its table never
reuses stale results.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from ssl_bench.api import DataError, hookimpl
from ssl_bench_tasks._folder import FolderSpec, FolderTask

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

CONFIG_VARIABLE = "SSL_BENCH_FOLDER_TASKS"

CXR_LUNGS = FolderSpec(
    name="cxr-lungs-folder",
    folders=("CXR_lungs_512",),
    modality="cxr",
    channels=1,
    target="lungs",
    lung_landmarks=True,
    description="Lungs in 60 chest X-rays (30 Montgomery, 30 Shenzhen) at 512x512, read as a folder task",
    url="https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets",
    licence="NLM public release; Shenzhen masks CC BY-NC-SA 4.0",
    citation=(
        "S. Jaeger, S. Candemir, S. Antani, Y.-X. J. Wáng, P.-X. Lu, G. Thoma: Two public chest X-ray datasets "
        "for computer-aided screening of pulmonary diseases. Quantitative Imaging in Medicine and Surgery "
        "4(6):475-477, 2014"
    ),
)
_SPEC_KEYS = frozenset(field.name for field in dataclasses.fields(FolderSpec)) - {"name", "folders", "expected_total"}


def configured_specs(config_file: Path) -> list[FolderSpec]:
    """The folder tasks of a TOML file's ``[folder_tasks.<name>]`` tables (see the module's docstring)."""
    try:
        with open(config_file, "rb") as stream:
            tables = tomllib.load(stream).get("folder_tasks", {})
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise DataError(f"{CONFIG_VARIABLE}: cannot read {config_file}: {error}") from error
    if not isinstance(tables, dict):
        raise DataError(f"{config_file}: folder_tasks must hold one table per task, [folder_tasks.<name>]")
    return [_spec(name, values, f"{config_file} [folder_tasks.{name}]") for name, values in tables.items()]


def _spec(name: str, values: object, where: str) -> FolderSpec:
    if not isinstance(values, dict):
        raise DataError(f'{where} must be a table of keys, e.g. folder = "my_scans"')
    unknown = set(values) - _SPEC_KEYS - {"folder"}
    missing = {"folder", "modality", "channels"} - set(values)
    if unknown or missing:
        allowed = ", ".join(sorted(_SPEC_KEYS | {"folder"}))
        raise DataError(f"{where}: unknown {sorted(unknown)}, missing {sorted(missing)}; the keys are {allowed}")
    options = {key: value for key, value in values.items() if key != "folder"}
    try:
        return FolderSpec(name=name, folders=(values["folder"],), **options)
    except DataError as error:
        raise DataError(f"{where}: {error}") from error


def registered_specs() -> list[FolderSpec]:
    """The default folder tasks and those of the file named by ``SSL_BENCH_FOLDER_TASKS``."""
    config_file = os.environ.get(CONFIG_VARIABLE, "").strip()
    extra = configured_specs(Path(config_file).expanduser()) if config_file else []
    return [CXR_LUNGS, *extra]


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None], task_tables: Mapping[str, Mapping]) -> None:
    run_file = [
        _spec(name, {key: value for key, value in table.items() if key != "type"}, f"the run file's [tasks.{name}]")
        for name, table in task_tables.items()
        if table["type"] == "folder"
    ]
    for spec in [*registered_specs(), *run_file]:
        register(FolderTask(spec))
