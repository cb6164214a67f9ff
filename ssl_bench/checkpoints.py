"""Encoders from files, scored with no code: a run file's ``[checkpoints.NAME]`` tables, each a row of the
leaderboard (``NAME``) whose encoder is loaded from ``file`` instead of being pretrained.

A file is a torch state dict (bare, or nested under ``state_dict`` or ``model``) or safetensors; ``prefix`` is
stripped from its keys (``module.``, ``backbone.``, ``encoder.``); ``encoder`` names its architecture (the run's
``encoder`` if absent). It must fit that encoder exactly: missing or unexpected keys are a one-line error that lists
a few and guesses the prefix. The file's content hash is part of
the row's identity, so another file is another row's worth of work.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from timm.models import adapt_input_conv

from ssl_bench.errors import ConfigError, DataError
from ssl_bench.method import Method, Stage
from ssl_bench.models import VGG16_BN_TINY, Encoder, checked_encoder, create_encoder

#: A [checkpoints.NAME] table's keys: their types, and their defaults where they may be left out.
_KEYS = {"file": (str, None), "prefix": (str, ""), "encoder": (str | None, None), "timm_weights": (bool, False)}
#: What a timm classifier has beyond its encoder: the head and the norm before it.
_CLASSIFIER_PARTS = ("fc.", "head.", "classifier.", "norm.", "fc_norm.", "head_drop.", "conv_head.", "global_pool.")
#: Prefixes that training frameworks put before an encoder's own names, tried when a file does not fit.
COMMON_PREFIXES = ("module.", "backbone.", "encoder.", "model.", "model.encoder.", "state_dict.")


@dataclass(frozen=True)
class Checkpoint:
    """A ``[checkpoints.NAME]`` table, checked: its file exists; ``sha256`` is the file's content hash."""

    name: str
    file: Path
    prefix: str
    sha256: str
    #: the architecture the file holds; None: the run's encoder
    encoder: str | None = None
    #: the file holds timm's released weights of ``encoder``, loaded as timm loads them
    timm_weights: bool = False


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
        if unknown := sorted(set(table) - set(_KEYS)):
            raise ConfigError(f"{where} has no key {', '.join(unknown)}; its keys: {', '.join(_KEYS)}")
        file, prefix, encoder = table.get("file"), table.get("prefix", ""), table.get("encoder")
        timm_weights = table.get("timm_weights", False)
        if not all(isinstance(table.get(key, default), kind) for key, (kind, default) in _KEYS.items()):
            raise ConfigError(
                f'{where} needs file = "path/to/encoder.pt", and optionally a prefix and an encoder (text) and '
                "timm_weights (true or false)"
            )
        if timm_weights and (prefix or encoder in (None, VGG16_BN_TINY)):
            raise ConfigError(
                f'{where}: timm_weights needs the timm model\'s name (encoder = "resnet18", say) and no prefix'
            )
        path = Path(file).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"{where}: {path} is not a file: give the path of the encoder's weights")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        encoder = encoder and checked_encoder(encoder)
        checkpoints[name] = Checkpoint(name, path, prefix, digest, encoder, timm_weights)
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


def checkpoint_encoder(checkpoint: Checkpoint, encoder: str, in_chans: int) -> Encoder:
    """The encoder ``encoder`` for ``in_chans`` channels with ``checkpoint``'s weights; :class:`DataError` naming the
    file and the fix where they do not fit."""
    loaded = create_encoder(encoder, in_chans)
    load_checkpoint(loaded, checkpoint)
    return loaded


def load_checkpoint(encoder: Encoder, checkpoint: Checkpoint) -> None:
    """Load ``checkpoint`` into ``encoder``, strictly but for the stem's channel count (adapted, see the module);
    :class:`DataError` naming the file and the fix otherwise."""
    state = {_stripped(key, checkpoint.prefix): value for key, value in _state_dict(checkpoint.file).items()}
    expected = encoder.state_dict()
    if not set(expected) <= set(state) and {f"model.{key}" for key in state} >= set(expected):
        state = {f"model.{key}": value for key, value in state.items()}  # timm's own names, for its wrapped model
    if checkpoint.timm_weights:
        state = {key: value for key, value in state.items() if key in expected or not _classifier_part(key)}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise DataError(f"{checkpoint.file} does not fit the run's encoder: {_misfit(missing, unexpected, expected)}")
    stem = _stem(expected, encoder.in_chans)
    if stem and _other_channels(state[stem], expected[stem]):
        state[stem] = adapt_input_conv(encoder.in_chans, state[stem], base_chans=state[stem].shape[1])
    shapes = [key for key in expected if state[key].shape != expected[key].shape]
    if shapes:
        key = shapes[0]
        raise DataError(
            f"{checkpoint.file} does not fit the run's encoder: {key} is {tuple(state[key].shape)}, the encoder's "
            f"{tuple(expected[key].shape)} ({len(shapes)} such); is it another architecture or channel count?"
        )
    encoder.load_state_dict(state, strict=True)


def _classifier_part(key: str) -> bool:
    return key.removeprefix("model.").startswith(_CLASSIFIER_PARTS)


def _stem(expected: dict[str, torch.Tensor], in_chans: int) -> str | None:
    """The key of the encoder's first convolution: the first 4-d weight taking ``in_chans`` channels."""
    return next((key for key, value in expected.items() if value.ndim == 4 and value.shape[1] == in_chans), None)


def _other_channels(weight: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether ``weight`` is ``expected``'s kernel for another input channel count (every other size the same)."""
    return weight.ndim == 4 and weight.shape[1] != expected.shape[1] and weight.shape[::2] == expected.shape[::2]


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
    else:
        if not missing and all(_classifier_part(key) for key in unexpected):
            said.append("if it holds timm's released weights of a classifier, add timm_weights = true to the table")
    return "; ".join(said)
