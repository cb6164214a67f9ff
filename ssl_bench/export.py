"""``ssl-bench export``: a pretrained encoder out of a results folder, chosen by what it is (method variant, pool,
seed index), not by its hash, as safetensors with a JSON sidecar saying what it is and how it was made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssl_bench.errors import ConfigError
from ssl_bench.method import variant_name
from ssl_bench.models import VGG16_BN_TINY, create_encoder, row_name
from ssl_bench.pretraining.cache import ENCODER_WEIGHTS, finished_pretraining
from ssl_bench.record import PretrainingRecord
from ssl_bench.results import load_torch, write_atomic, write_json


@dataclass(frozen=True)
class Pretrained:
    """A finished pretraining of a results folder."""

    folder: Path
    record: PretrainingRecord

    @property
    def variant(self) -> str:
        """Its leaderboard row's name: ``simclr``, ``simclr(temperature=0.2)@resnet18``."""
        return row_name(
            variant_name(self.record.spec["method"], self.record.spec["options"]), self.record.spec["encoder"]
        )

    @property
    def pool(self) -> str:
        return self.record.spec["pool"]["id"]

    @property
    def seed_index(self) -> int:
        return self.record.spec["seed_index"]

    def describe(self) -> str:
        return f"{self.variant} on {self.pool}, seed {self.seed_index} ({self.folder.name})"


def finished_pretrainings(results: Path) -> list[Pretrained]:
    """Every finished pretraining under ``results`` (``cache/pretrain/<id>``), in a stable order."""
    folders = sorted((results / "cache" / "pretrain").glob("*/"))
    found = [Pretrained(folder, record) for folder in folders if (record := finished_pretraining(folder))]
    return sorted(found, key=lambda p: (p.variant, p.pool, p.seed_index))


def choose(results: Path, variant: str, pool: str | None, seed_index: int) -> Pretrained:
    """The one finished pretraining of row ``variant`` (``simclr``, ``simclr(temperature=0.2)@resnet18``) at
    ``seed_index`` whose pool id contains ``pool`` (any pool if None); :class:`ConfigError` listing what there is
    otherwise."""
    found = finished_pretrainings(results)
    chosen = [
        p for p in found if p.variant == variant and p.seed_index == seed_index and (pool is None or pool in p.pool)
    ]
    if len(chosen) == 1:
        return chosen[0]
    there = "; ".join(p.describe() for p in found) or "none"
    if not chosen:
        raise ConfigError(
            f"no finished pretraining of {variant}, seed {seed_index}, pool {pool or 'any'} in {results}; "
            f"finished: {there}"
        )
    raise ConfigError(
        f"{len(chosen)} pretrainings of {variant}, seed {seed_index} in {results}: name the pool with --pool "
        f"({', '.join(p.pool for p in chosen)})"
    )


def export(pretrained: Pretrained, out: Path) -> tuple[Path, Path]:
    """Write ``pretrained``'s encoder to ``out`` (safetensors) and its description to ``out`` + ``.json``."""
    from safetensors.torch import save

    spec = pretrained.record.spec
    state = load_torch(pretrained.folder / ENCODER_WEIGHTS, map_location="cpu", weights_only=True)
    encoder = create_encoder(spec["encoder"], in_chans=spec["channels"])
    encoder.load_state_dict(state, strict=True)  # what is written loads back into the encoder it names
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.contiguous() for name, tensor in state.items()}
    write_atomic(out, lambda stream: stream.write(save(tensors, metadata={"format": "pt"})))
    sidecar = write_json(
        out.with_name(out.name + ".json"),
        {
            "architecture": spec["encoder"],
            "in_chans": spec["channels"],
            # timm encoders are wrapped: their keys carry "model." before timm's own names.
            "key_prefix": "" if spec["encoder"] == VGG16_BN_TINY else "model.",
            "timm_options": getattr(encoder, "timm_options", None),
            # A ViT's pyramid taps these blocks; timm's model takes the file once pruned to them (without its norm).
            "pyramid_blocks": getattr(encoder, "blocks", None),
            "feature_channels": [info.channels for info in encoder.feature_info],
            "feature_strides": [info.reduction for info in encoder.feature_info],
            "method_variant": pretrained.variant,
            "pool": spec["pool"],
            "seed_index": spec["seed_index"],
            "stages": spec["stages"],
            "precision": spec["precision"],
            "pretraining_id": pretrained.folder.name,
            "ssl_bench": spec["ssl_bench"],
        },
    )
    return out, sidecar
