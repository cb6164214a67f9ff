"""Unlabelled pretraining pools: which images a method is pretrained on, decoded once and memory-mapped.

For a modality the pool is, in order of preference: a folder the configuration names, a pool a plugin
registered, or the training images of the modality's available tasks minus every test image of every
available task (matched by content, so that no test image is ever pretrained on) and every image of a group
(a patient, a volume) that has an image in a test split.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ssl_bench.data.imageio import IMAGE_SUFFIXES, read_image
from ssl_bench.data.prepared import file_listing
from ssl_bench.errors import ConfigError, DataError, PluginError, SslBenchWarning
from ssl_bench.method import Method
from ssl_bench.plugins import Registry
from ssl_bench.results import artefact_problem, write_checked, write_json
from ssl_bench.task import load_task_data

#: Every source image of a folder pool is resized to this square side (LD's prepared size).
POOL_IMAGE_SIZE = 512
#: One image in twenty is held out for pretraining validation.
HOLDOUT_EVERY = 20


@dataclass(frozen=True)
class PoolSource:
    """Where a pool's images come from; ``key`` names the decoded cache, ``load`` decodes."""

    id: str
    modality: str
    channels: int
    key: str
    load: Callable[[], torch.Tensor]


@dataclass(frozen=True)
class PreparedPool:
    """A decoded pool: ``images`` is uint8 (N, C, H, W), memory-mapped; ``fingerprint`` hashes its content."""

    id: str
    fingerprint: str
    images: np.ndarray
    train_index: np.ndarray
    val_index: np.ndarray

    @property
    def channels(self) -> int:
        return self.images.shape[1]


def _digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-2:] == (size, size):
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _folder_listing(folder: Path) -> str:
    """A digest of the folder's image files, their sizes and modification times: a replaced or added file changes
    it."""
    return _digest(json.dumps(file_listing(_folder_files(folder), folder)))


def _folder_images(folder: Path, channels: int) -> torch.Tensor:
    files = _folder_files(folder)
    if not files:
        raise DataError(f"pool folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    arrays = [read_image(path, channels) for path in files]
    return torch.cat([_resize(torch.tensor(a).permute(2, 0, 1)[None], POOL_IMAGE_SIZE) for a in arrays])


def _tasks_of(registry: Registry, modality: str, data_root: Path | None):
    return [t for t in registry.tasks.values() if t.modality == modality and t.availability(data_root).ok]


def _default_images(registry: Registry, modality: str, data_root: Path | None) -> torch.Tensor:
    test_hashes: set[str] = set()
    test_groups: set[str] = set()
    train: list[tuple[str, torch.Tensor]] = []
    for task in [t for t in registry.tasks.values() if t.availability(data_root).ok]:
        try:
            data = load_task_data(task, data_root)
        except PluginError as error:  # its images can be neither pooled nor held out: they are not in the pool
            warnings.warn(f"{error}; the {modality} pool is made without it", SslBenchWarning, stacklevel=2)
            continue
        test_hashes.update(_digest(image.numpy().tobytes()) for image in data.test.images)
        test_groups.update(task.image_group(image_id) for image_id in data.test.ids)
        if task.modality == modality:
            groups = [task.image_group(image_id) for image_id in data.train.ids]
            train.extend(zip(groups, data.train.images.split(1), strict=True))
    # One size per pool: the modality's tasks normally share theirs (512 for LD's tasks, 28 for MedMNIST).
    size = train[0][1].shape[-1]
    kept = [
        image
        for group, image in ((group, _resize(image, size)) for group, image in train)
        if group not in test_groups and _digest(image.numpy().tobytes()) not in test_hashes
    ]
    return torch.cat(kept)


def resolve_pool(modality: str, registry: Registry, data_root: Path | None, folders: dict[str, Path]) -> PoolSource:
    """The pool that methods are pretrained on before being scored on tasks of ``modality``."""
    tasks = _tasks_of(registry, modality, data_root)
    if modality in folders:
        folder = Path(folders[modality]).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"pool folder for {modality!r} is not a folder: {folder}")
        channels = tasks[0].channels if tasks else 3
        return PoolSource(
            f"folder:{folder}",
            modality,
            channels,
            f"folder:{folder.resolve()}:{channels}:{_folder_listing(folder)}",
            lambda: _folder_images(folder, channels),
        )
    for pool in registry.pools.values():
        if pool.modality == modality:
            key = f"{pool.name}:{pool.version}:{registry.plugin_version('pools', pool.name)}"
            return PoolSource(pool.name, modality, pool.channels, key, lambda pool=pool: pool.images(data_root))
    if not tasks:
        raise ConfigError(f"no pretraining pool for modality {modality!r}: no task of it is available.")
    names = ",".join(sorted(f"{t.name}:{t.version}" for t in tasks))
    return PoolSource(
        f"default:{modality}",
        modality,
        tasks[0].channels,
        # "groups": pools made before test groups were left out are decoded again (their content says if they differ)
        f"default:{modality}:{data_root}:{names}:groups",
        lambda: _default_images(registry, modality, data_root),
    )


def prepare_pool(source: PoolSource, cache_dir: Path, echo: Callable[[str], None] = print) -> PreparedPool:
    """Decode ``source`` once into ``cache_dir`` and memory-map it; later calls check the file and map it."""
    stem = cache_dir / _digest(source.key)[:16]
    array_path, meta_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    fingerprint = _recorded_fingerprint(meta_path)
    if problem := artefact_problem(array_path) or (None if fingerprint else f"has no readable {meta_path.name}"):
        if array_path.exists():  # damaged or changed, not just absent
            echo(f"{array_path} {problem}: decoding pool {source.id} again")
        _decode(source, array_path, meta_path)
        fingerprint = _recorded_fingerprint(meta_path)
    images = np.load(array_path, mmap_mode="r")
    index = np.arange(len(images))
    held_out = index % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    return PreparedPool(source.id, fingerprint, images, index[~held_out], index[held_out])


def _recorded_fingerprint(meta_path: Path) -> str | None:
    try:
        return str(json.loads(meta_path.read_text())["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _decode(source: PoolSource, array_path: Path, meta_path: Path) -> None:
    images = source.load()
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != source.channels:
        raise DataError(
            f"pool {source.id!r} gave {images.dtype} {tuple(images.shape)}; "
            f"expected uint8 (N, {source.channels}, H, W)."
        )
    array = np.ascontiguousarray(images.numpy())
    write_checked(array_path, lambda stream: np.save(stream, array))
    write_json(meta_path, {"id": source.id, "key": source.key, "fingerprint": _digest(array.tobytes())})


def prepare_extras(
    pool: PreparedPool, method: Method, cache_dir: Path, echo: Callable[[str], None] = print
) -> np.ndarray | None:
    """``method.pool_extras`` of ``pool``, computed once and memory-mapped from ``cache_dir`` after."""
    path = cache_dir / f"{pool.fingerprint[:16]}-extras-{method.name}-{method.version}.npy"
    if path.exists():
        if (problem := artefact_problem(path)) is None:
            return np.load(path, mmap_mode="r")
        echo(f"{path} {problem}: computing {method.name}'s pool extras again")
    extras = method.pool_extras(np.asarray(pool.images))
    if extras is None:
        return None
    if len(extras) != len(pool.images):
        raise PluginError(f"{method.name}.pool_extras gave {len(extras)} rows for {len(pool.images)} pool images")
    extras = np.ascontiguousarray(extras)
    write_checked(path, lambda stream: np.save(stream, extras))
    return np.load(path, mmap_mode="r")
