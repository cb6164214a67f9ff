"""Encoders from files, scored with no code: a run file's ``[checkpoints.NAME]`` tables, each a row of the
leaderboard (``NAME``) whose encoder is loaded from ``file`` instead of being pretrained.

A file is a torch state dict (bare, or nested under ``state_dict`` or ``model``) or safetensors; ``prefix`` is
stripped from its keys (``module.``, ``backbone.``, ``encoder.``). It must fit the run's encoder exactly: missing
or unexpected keys are a one-line error that lists a few and guesses the prefix. The file's content hash is part of
the row's identity, so another file is another row's worth of work.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ssl_bench.errors import ConfigError, DataError
from ssl_bench.method import Method, Stage

#: Prefixes that training frameworks put before an encoder's own names, tried when a file does not fit.
COMMON_PREFIXES = ("module.", "backbone.", "encoder.", "model.", "model.encoder.", "state_dict.")


@dataclass(frozen=True)
class Checkpoint:
    """A ``[checkpoints.NAME]`` table, checked: its file exists; ``sha256`` is the file's content hash."""

    name: str
    file: Path
    prefix: str
    sha256: str


def read_checkpoints(tables: object, method_names: set[str]) -> dict[str, Checkpoint]:
    """The run file's ``[checkpoints.NAME]`` tables as :class:`Checkpoint` s; :class:`ConfigError` naming the table."""
    if tables is None:
        return {}
    if not isinstance(tables, dict) or not all(isinstance(table, dict) for table in tables.values()):
        raise ConfigError('checkpoints must be [checkpoints.NAME] tables, each with file = "path/to/encoder.pt"')
    checkpoints = {}
    for name, table in tables.items():
        where = f"[checkpoints.{name}]"
        if name in method_names:
            raise ConfigError(f"{where} is named like the method {name}: a checkpoint's row needs its own name")
        if unknown := sorted(set(table) - {"file", "prefix"}):
            raise ConfigError(f"{where} has no key {', '.join(unknown)}; its keys: file, prefix")
        file, prefix = table.get("file"), table.get("prefix", "")
        if not isinstance(file, str) or not isinstance(prefix, str):
            raise ConfigError(f'{where} needs file = "path/to/encoder.pt" (text) and an optional prefix (text)')
        path = Path(file).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"{where}: {path} is not a file: give the path of the encoder's weights")
        checkpoints[name] = Checkpoint(name, path, prefix, hashlib.sha256(path.read_bytes()).hexdigest())
    return checkpoints


class CheckpointRow(Method):
    """A leaderboard row whose encoder is a checkpoint's, loaded as it is: no pretraining stage."""

    description: ClassVar[str] = "an encoder loaded from a file"

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__()
        self.name = checkpoint.name
        self.checkpoint = checkpoint

    def stages(self, scale: str) -> list[Stage]:
        return []


def load_checkpoint(encoder: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Load ``checkpoint`` into ``encoder``, strictly; :class:`DataError` naming the file and the fix otherwise."""
    state = {_stripped(key, checkpoint.prefix): value for key, value in _state_dict(checkpoint.file).items()}
    expected = encoder.state_dict()
    if set(state) != set(expected) and {f"model.{key}" for key in state} == set(expected):
        state = {f"model.{key}": value for key, value in state.items()}  # timm's own names, for its wrapped model
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise DataError(f"{checkpoint.file} does not fit the run's encoder: {_misfit(missing, unexpected, expected)}")
    shapes = [key for key in expected if state[key].shape != expected[key].shape]
    if shapes:
        key = shapes[0]
        raise DataError(
            f"{checkpoint.file} does not fit the run's encoder: {key} is {tuple(state[key].shape)}, the encoder's "
            f"{tuple(expected[key].shape)} ({len(shapes)} such); is it another architecture or channel count?"
        )
    encoder.load_state_dict(state, strict=True)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's and safetensors' ways of saying "not weights"
        raise DataError(f"{path} cannot be read as weights ({type(error).__name__}: {error})") from error
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise DataError(f"{path} holds no state dict (names to tensors), bare or under state_dict or model")
    return state


def _stripped(key: str, prefix: str) -> str:
    return key[len(prefix) :] if prefix and key.startswith(prefix) else key


def _misfit(missing: list[str], unexpected: list[str], expected: dict) -> str:
    """A few missing and unexpected keys, and the prefix that would make the file fit, if one would."""
    said = []
    if missing:
        said.append(f"{len(missing)} missing, e.g. {', '.join(missing[:3])}")
    if unexpected:
        said.append(f"{len(unexpected)} unexpected, e.g. {', '.join(unexpected[:3])}")
    known = set(expected) | {key.removeprefix("model.") for key in expected}  # timm's names, wrapped or not
    for prefix in COMMON_PREFIXES:
        stripped = {_stripped(key, prefix) for key in unexpected}
        if stripped and stripped <= known:
            said.append(f'its keys start with {prefix!r}: add prefix = "{prefix}" to the table')
            break
    return "; ".join(said)
