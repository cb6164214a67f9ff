"""The shared networks every method is compared on: encoders, the U-Net decoder and the transfer model.

``vgg16_bn_tiny`` and the decoder reproduce LD's networks (Chen et al. 2021) exactly; any timm model with
``features_only`` support can stand in as encoder, with a decoder derived by the same rule, and so can a plain
timm transformer (ViT, DeiT, EVA), through a simple feature pyramid (:class:`PyramidEncoder`).
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass
from typing import ClassVar

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.errors import ConfigError

VGG16_BN_TINY = "vgg16_bn_tiny"
# LD's VGG16-BN layout with every width divided by 4; "M" is a 2x2 max-pool.
_VGG16_BN_TINY_LAYOUT: tuple[int | str, ...] = (
    *(16, 16, "M", 32, 32, "M", 64, 64, 64, "M"),
    *(128, 128, 128, "M", 128, 128, 128, "M"),
)
# The narrowest decoder block: keeps generic decoders of slim timm encoders from collapsing to a few channels.
_MIN_DECODER_CHANNELS = 16


@dataclass(frozen=True)
class FeatureInfo:
    """One encoder output: its channel count and its stride relative to the input."""

    channels: int
    reduction: int


class Encoder(nn.Module):
    """A backbone that maps ``(N, in_chans, H, W)`` to a list of features, shallow to deep."""

    in_chans: int
    feature_info: list[FeatureInfo]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError


def _init_like_ld(module: nn.Module) -> None:
    """The released LD code's init (its ``_initialize_weights``): convs Kaiming-normal (fan_out, relu) with
    zero bias, BatchNorm weight 1 and bias 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv3x3 (pad 1, bias) - BatchNorm - ReLU, the building block of LD's encoder and decoder."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class VGG16BNTiny(Encoder):
    """LD's ``vgg16_bn_tiny``: five stages, returning the activation before each max-pool."""

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.stages = nn.ModuleList()
        stage: list[nn.Module] = []
        channels = in_chans
        for item in _VGG16_BN_TINY_LAYOUT:
            if item == "M":
                self.stages.append(nn.Sequential(*stage))
                stage = []
            else:
                stage.append(conv_bn_relu(channels, int(item)))
                channels = int(item)
        # One pool module serves every stage; LD's last pool is never used, so it is not applied.
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.feature_info = [
            FeatureInfo(channels=stage[-1][0].out_channels, reduction=2**i) for i, stage in enumerate(self.stages)
        ]
        _init_like_ld(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, stage in enumerate(self.stages):
            if index > 0:
                x = self.pool(x)
            x = stage(x)
            features.append(x)
        return features


class TimmEncoder(Encoder):
    """Any timm model built with ``features_only=True`` and random weights."""

    #: what ``timm.create_model`` is given besides the name and ``in_chans`` (the export's sidecar says it)
    timm_options: ClassVar[dict[str, object]] = {"features_only": True}

    def __init__(self, name: str, in_chans: int = 3) -> None:
        super().__init__()
        self.in_chans = in_chans
        try:
            self.model = timm.create_model(name, pretrained=False, in_chans=in_chans, **self.timm_options)
        except RuntimeError as error:  # timm's way of saying "no features_only for this architecture"
            raise ValueError(f"timm model {name!r} cannot be used as an encoder: {error}") from error
        info = self.model.feature_info
        self.feature_info = [
            FeatureInfo(channels=c, reduction=r) for c, r in zip(info.channels(), info.reduction(), strict=True)
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))


class PyramidEncoder(Encoder):
    """A plain timm transformer (ViT, DeiT, EVA: one stride, its patch size) as an encoder of any input size.

    timm builds it with ``dynamic_img_size`` (position embeddings resampled to the input's grid) and
    ``dynamic_img_pad`` (the input padded to whole patches). The tokens of four evenly spaced blocks (the 3rd, 6th,
    9th and 12th of 12, as UNETR taps them) are reshaped to maps and resampled to strides 4, 8, 16 and 32, shallow
    to deep, as ViTDet's simple feature pyramid does from one block. The resampling has no parameters (max-pooling
    down, repetition up), so a frozen encoder is the whole transformer and nothing else, and the U-Net decoder and
    every protocol serve it as they serve a CNN. The blocks after the last tapped one, the final norm and the
    classifier are pruned: nothing unused is trained or saved.
    """

    STRIDES = (4, 8, 16, 32)
    timm_options: ClassVar[dict[str, object]] = {"num_classes": 0, "dynamic_img_size": True, "dynamic_img_pad": True}

    def __init__(self, model: nn.Module, in_chans: int) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.model = model
        depth = len(model.blocks)
        self.blocks = sorted({max(round(depth * quarter / 4) - 1, 0) for quarter in range(1, 5)})
        model.prune_intermediate_layers(self.blocks, prune_norm=True, prune_head=True)
        self.feature_info = [FeatureInfo(channels=model.embed_dim, reduction=stride) for stride in self.STRIDES]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.model.forward_intermediates(x, indices=self.blocks, intermediates_only=True)
        maps = [maps[0]] * (len(self.STRIDES) - len(maps)) + maps  # a model of under four blocks repeats its first
        height, width = x.shape[-2:]
        return [
            F.adaptive_max_pool2d(features, (math.ceil(height / stride), math.ceil(width / stride)))
            for features, stride in zip(maps, self.STRIDES, strict=True)
        ]


def _plain_transformer(name: str, in_chans: int) -> nn.Module | None:
    """timm model ``name`` built to take any input size, if it is a plain transformer (its constructor takes
    ``dynamic_img_size``); None for any other architecture."""
    try:
        return timm.create_model(name, pretrained=False, in_chans=in_chans, **PyramidEncoder.timm_options)
    except TypeError as error:
        if "dynamic_img" in str(error):  # "got an unexpected keyword argument 'dynamic_img_size'"
            return None
        raise


def create_encoder(name: str = VGG16_BN_TINY, in_chans: int = 3) -> Encoder:
    """``vgg16_bn_tiny`` or any timm model name, randomly initialised (weights are never downloaded)."""
    if name == VGG16_BN_TINY:
        return VGG16BNTiny(in_chans)
    if timm.is_model(name):
        transformer = _plain_transformer(name, in_chans)
        return PyramidEncoder(transformer, in_chans) if transformer is not None else TimmEncoder(name, in_chans)
    close = difflib.get_close_matches(name, [VGG16_BN_TINY, *timm.list_models()], n=5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown encoder {name!r}.{hint} Use {VGG16_BN_TINY!r} or a timm model name "
        "(list them with: python -c \"import timm; print(timm.list_models('*pattern*'))\")."
    )


#: What :func:`encoder_kind` tells apart: encoders with features at several strides, and plain transformers
#: (:class:`PyramidEncoder`), which some methods cannot serve (``Method.encoder_kinds``).
ENCODER_KINDS = ("cnn", "vit")


@functools.cache  # the answer builds the model
def encoder_kind(name: str) -> str:
    """``vit`` for a plain timm transformer, ``cnn`` for any other encoder (hybrids such as mobilevit included)."""
    return "cnn" if name == VGG16_BN_TINY or _plain_transformer(name, 1) is None else "vit"


def checked_encoder(name: str) -> str:
    """``name`` if it names an encoder; :class:`ConfigError` with close matches otherwise."""
    try:
        create_encoder(name)  # fails fast on an unknown name, with close matches
    except ValueError as error:
        raise ConfigError(f"encoder: {error}") from error
    return name


def row_name(variant: str, encoder: str) -> str:
    """A leaderboard row's name: the method variant, and ``@encoder`` unless it is the shared default."""
    return variant if encoder == VGG16_BN_TINY else f"{variant}@{encoder}"


def encoder_problem(name: str, in_chans: int, sizes: set[int]) -> str | None:
    """Why encoder ``name`` cannot take square images of one of ``sizes`` (a timm ViT built for 224 px, say), or
    None: it is built once and fed a zero image of each size. ``vgg16_bn_tiny`` is convolutional and takes any."""
    if name == VGG16_BN_TINY:
        return None
    encoder = create_encoder(name, in_chans).eval()
    for size in sorted(sizes):
        try:
            with torch.no_grad():
                encoder(torch.zeros(1, in_chans, size, size))
        except Exception as error:  # whatever the architecture raises: it is reported, not re-raised
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return f"encoder {name} cannot take {size}x{size} images ({reason})"
    return None


def _halve(channels: int) -> int:
    return max(channels // 2, _MIN_DECODER_CHANNELS)


class _UpBlock(nn.Module):
    """Upsample ``x`` (nearest) to the skip's size, concatenate the skip, then the optional convs."""

    def __init__(self, convs: list[nn.Module]) -> None:
        super().__init__()
        self.convs = nn.Sequential(*convs)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.convs(torch.cat([x, skip], dim=1))


class UNetDecoder(nn.Module):
    """LD's U-Net decoder, derived from an encoder's ``feature_info``.

    At each skip level the deeper output is upsampled to the skip's resolution and concatenated
    (``c`` channels), then two conv blocks ``c -> c/2 -> c/4`` (halving stops at 16 channels); the
    shallowest concatenation has no convs.
    For ``vgg16_bn_tiny`` this gives LD's 256->128->64, 128->64->32, 64->32->16, then 32 channels at H.
    Where the shallowest feature is strided (timm models), x2 upsamplings with one block ``c -> c/2``
    each continue to full resolution.
    Its layers keep PyTorch's default init, as the released pretraining decoder; :class:`SegmentationModel`
    re-initialises its own.
    """

    def __init__(self, feature_info: list[FeatureInfo]) -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        channels = feature_info[-1].channels
        for depth in range(len(feature_info) - 2, -1, -1):
            concat = channels + feature_info[depth].channels
            if depth == 0:
                self.levels.append(_UpBlock([]))
                channels = concat
            else:
                middle, channels = _halve(concat), _halve(_halve(concat))
                self.levels.append(_UpBlock([conv_bn_relu(concat, middle), conv_bn_relu(middle, channels)]))
        self.to_full_resolution = nn.Sequential()
        for _ in range(_log2(feature_info[0].reduction)):
            self.to_full_resolution.append(nn.Upsample(scale_factor=2, mode="nearest"))
            self.to_full_resolution.append(conv_bn_relu(channels, _halve(channels)))
            channels = _halve(channels)
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for level, skip in zip(self.levels, reversed(features[:-1]), strict=True):
            x = level(x, skip)
        return self.to_full_resolution(x)


def _log2(reduction: int) -> int:
    if reduction < 1 or reduction & (reduction - 1):
        raise ValueError(f"the shallowest encoder feature must have a power-of-two reduction, got {reduction}")
    return reduction.bit_length() - 1


class UNet(nn.Module):
    """Encoder plus :class:`UNetDecoder`; any input size works (zero padding bottom/right, then a crop)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = UNetDecoder(encoder.feature_info)
        self.out_channels = self.decoder.out_channels
        self.multiple = max(info.reduction for info in encoder.feature_info)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        features = self.decoder(self.encoder(x))
        return features[..., :height, :width]


class SegmentationModel(nn.Module):
    """LD's transfer network: a fresh U-Net decoder, a full-resolution block ``c -> 16 -> 16``, conv 16 -> 1.

    The decoder and head get the released transfer network's init (Kaiming-normal fan_out convs, zero biases,
    BatchNorm 1 and 0; PyTorch's default would make the last conv's weights about 10x smaller); the encoder
    keeps its weights.
    ``forward`` returns logits ``(N, 1, H, W)``.
    """

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.unet = UNet(encoder)
        self.head = nn.Sequential(
            conv_bn_relu(self.unet.out_channels, 16),
            conv_bn_relu(16, 16),
            nn.Conv2d(16, 1, kernel_size=3, padding=1),
        )
        _init_like_ld(self.unet.decoder)
        _init_like_ld(self.head)

    @property
    def encoder(self) -> Encoder:
        # A property, not a second registration: state_dict keys stay unique (``unet.encoder.*``).
        return self.unet.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.unet(x))
