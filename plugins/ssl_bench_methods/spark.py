"""SparK (Tian et al., ICLR 2023, "Designing BERT for convolutional networks"): masked image modelling on a CNN.

The image is cut into patches of the encoder's deepest stride and 60% of them are hidden (zeroed). The encoder
runs as if its convolutions were sparse: every convolution, pooling and per-position layer re-applies the mask
to its output, and BatchNorm takes its statistics over the visible positions only, so that nothing of the
hidden patches reaches a visible one and the zeros do not skew the statistics. At each scale the hidden
positions are then filled with a learned mask token, and a light U-Net decoder predicts the image; the loss is
the squared error on the per-patch normalised pixels of the hidden patches.

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et al.
2021: 100 epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step. Kept from SparK: mask ratio
0.6 at the deepest stride, the sparse emulation above (its rule of masking after every layer that could spread
into hidden positions), a BatchNorm over visible positions and a mask token per scale before a projection to
the decoder (1 x 1 at the deepest scale, 3 x 3 above), a decoder of transposed-convolution blocks each followed by
two 3 x 3 conv-BatchNorm-ReLU6, halving the width per scale, the per-patch normalised target and its loss on
hidden patches only, views of random resized crops at scale 0.67-1. Changed: the decoder's deepest width is the
encoder's deepest width up to 768 (SparK: 768 whatever the encoder), never narrower than 16; flips both ways (the
images here have no canonical left-right); Adam at LD's 1e-3, not LAMB 2e-4 x batch / 256 for 1600 epochs.
A CNN only: a ViT's tokens are hidden by MAE, not by emulated sparse convolution.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ssl_bench.api import Stage, augment, hookimpl, require_fractions
from ssl_bench_methods._global import GlobalMethod

#: SparK's widest decoder block.
MAX_DECODER_WIDTH = 768
#: The narrowest decoder block, so that slim encoders keep a decoder of some capacity.
MIN_DECODER_WIDTH = 16
#: Patches per side at least, so that some are hidden and some visible.
MIN_GRID = 2
#: Layers whose output is re-masked: a convolution or pooling spreads values across positions, a per-position
#: layer with a bias makes a zero non-zero.
_MASKED_OUTPUTS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.LayerNorm, nn.Linear)


@dataclass(frozen=True)
class SparKOptions:
    mask_ratio: float = 0.6

    def __post_init__(self) -> None:
        require_fractions(self, ("mask_ratio",), "spark")


def visible_grid(
    batch: int, rows: int, cols: int, ratio: float, generator: torch.Generator, device: torch.device
) -> Tensor:
    """(batch, 1, rows, cols) bool, True where a patch is visible: ``round((1 - ratio) x patches)`` random patches
    per image, at least one and never all."""
    patches = rows * cols
    kept = min(max(round((1 - ratio) * patches), 1), patches - 1)
    order = augment.uniform(generator, (batch, patches)).argsort(dim=1)[:, :kept]
    visible = torch.zeros(batch, patches, dtype=torch.bool).scatter_(1, order, True)
    return visible.view(batch, 1, rows, cols).to(device)


def expand_grid(visible: Tensor, height: int, width: int) -> Tensor:
    """The (B, 1, rows, cols) grid repeated to (B, 1, height, width): each patch covers a whole block of pixels."""
    rows, cols = visible.shape[-2:]
    if height % rows or width % cols or height // rows != width // cols:
        raise ValueError(
            f"spark: a {height} x {width} feature map is not a whole multiple of the {rows} x {cols} mask grid; "
            "give the encoder sizes that are multiples of its deepest stride"
        )
    factor = height // rows
    return visible.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def _mask_output(module: nn.Module, features: Tensor, visible: Tensor) -> Tensor:
    if features.ndim != 4:
        return features
    if isinstance(module, nn.Linear | nn.LayerNorm) and not isinstance(module, LayerNorm2d):
        # A per-position layer on a channels-last (B, H, W, C) map, as in ConvNeXt's blocks.
        return features * expand_grid(visible, *features.shape[1:3]).permute(0, 2, 3, 1)
    return features * expand_grid(visible, *features.shape[-2:])


@contextmanager
def sparse_encoding(encoder: nn.Module, visible: Tensor) -> Iterator[None]:
    """Within the block, ``encoder`` runs as SparK's sparse encoder for the (B, 1, rows, cols) ``visible`` grid at
    its deepest stride: its input's hidden patches are zeroed, hooks re-mask the outputs of ``_MASKED_OUTPUTS`` and
    move BatchNorm onto the visible positions. The hooks are removed on leaving, so the encoder is dense again."""
    handles = [encoder.register_forward_pre_hook(lambda _, inputs: _mask_output(encoder, inputs[0], visible))]
    for module in encoder.modules():
        if isinstance(module, _BatchNorm):
            # The pre-hook hands the norm the visible positions (the norm's own forward then runs on them) and the
            # hook puts them back in place; it cannot be one hook, which would see statistics of the dense input.
            dense_shape: list[torch.Size] = []
            handles.append(module.register_forward_pre_hook(_gather_visible(visible, dense_shape)))
            handles.append(module.register_forward_hook(_scatter_visible(visible, dense_shape)))
        elif isinstance(module, _MASKED_OUTPUTS):
            handles.append(module.register_forward_hook(lambda mod, _, out: _mask_output(mod, out, visible)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _gather_visible(visible: Tensor, dense_shape: list[torch.Size]):
    def hook(_: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[Tensor]:
        (features,) = inputs
        dense_shape.append(features.shape)
        keep = expand_grid(visible, *features.shape[-2:])[:, 0]
        return (features.permute(0, 2, 3, 1)[keep][:, :, None, None],)

    return hook


def _scatter_visible(visible: Tensor, dense_shape: list[torch.Size]):
    def hook(_: nn.Module, __: tuple[Tensor, ...], normed: Tensor) -> Tensor:
        batch, _channels, height, width = dense_shape.pop()
        keep = expand_grid(visible, height, width)[:, 0]
        dense = normed.new_zeros(batch, height, width, normed.shape[1])
        dense[keep] = normed.flatten(start_dim=1)
        return dense.permute(0, 3, 1, 2)

    return hook


def decoder_width(encoder: nn.Module, stride: int) -> int:
    """The decoder's width at ``stride``: the deepest's halved per scale up."""
    deepest = encoder.feature_info[-1]
    width = min(deepest.channels, MAX_DECODER_WIDTH) * stride // deepest.reduction
    return max(width, MIN_DECODER_WIDTH)


def up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """SparK's decoder block: a transposed convolution to twice the size, then two 3 x 3 conv-BatchNorm-ReLU6."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, in_channels, kernel_size=4, stride=2, padding=1),
        nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU6(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class SparKModel(nn.Module):
    """The encoder, run sparse; per scale a BatchNorm, a mask token and a projection; the light U-Net decoder."""

    def __init__(self, encoder: nn.Module, channels: int) -> None:
        super().__init__()
        self.encoder = encoder
        info = encoder.feature_info
        self.patch_size = info[-1].reduction
        self.scales = [feature.reduction for feature in info]
        self.densify_norms = nn.ModuleList(nn.BatchNorm2d(feature.channels) for feature in info)
        self.mask_tokens = nn.ParameterList(
            nn.init.trunc_normal_(torch.zeros(1, feature.channels, 1, 1), std=0.02, a=-0.02, b=0.02) for feature in info
        )
        self.densify_projections = nn.ModuleList(
            nn.Conv2d(
                feature.channels,
                decoder_width(encoder, feature.reduction),
                kernel_size=1 if feature is info[-1] else 3,
                padding=0 if feature is info[-1] else 1,
            )
            for feature in info
        )
        up_strides = [2**k for k in range(int(math.log2(self.patch_size)), 0, -1)]
        self.up_blocks = nn.ModuleList(
            up_block(decoder_width(encoder, stride), decoder_width(encoder, stride // 2)) for stride in up_strides
        )
        self.to_pixels = nn.Conv2d(decoder_width(encoder, 1), channels, kernel_size=1)

    @staticmethod
    def _densify_norm(norm: nn.Module, feature: Tensor, visible: Tensor) -> Tensor:
        """A scale's BatchNorm over its visible positions only, as SparK's sparse BatchNorm before densifying."""
        with sparse_encoding(norm, visible):
            return norm(feature)

    def forward(self, views: Tensor, visible: Tensor) -> Tensor:
        """The decoder's image from the visible patches of ``views``: (B, C, H, W)."""
        with sparse_encoding(self.encoder, visible):
            features = self.encoder(views)
        features = [
            self._densify_norm(norm, feature, visible)
            for norm, feature in zip(self.densify_norms, features, strict=True)
        ]
        densified = {
            scale: projection(torch.where(expand_grid(visible, *feature.shape[-2:]), feature, token))
            for scale, feature, token, projection in zip(
                self.scales, features, self.mask_tokens, self.densify_projections, strict=True
            )
        }
        decoded = densified[self.patch_size]
        stride = self.patch_size
        for block in self.up_blocks:
            stride //= 2
            decoded = block(decoded)
            if stride in densified:
                decoded = decoded + densified[stride]
        return self.to_pixels(decoded)


def patches(images: Tensor, size: int) -> Tensor:
    """(B, C, H, W) -> (B, patches, C x size x size), patches in row-major order."""
    return F.unfold(images, kernel_size=size, stride=size).transpose(1, 2)


def hidden_patch_loss(predicted: Tensor, views: Tensor, visible: Tensor, patch_size: int) -> Tensor:
    """SparK's loss: the mean squared error per patch against the patch's pixels normalised to mean 0 and
    variance 1, averaged over the hidden patches."""
    target = patches(views, patch_size)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = (patches(predicted, patch_size) - target).pow(2).mean(-1)
    hidden = (~visible).flatten(start_dim=1).to(per_patch.dtype)
    return (per_patch * hidden).sum() / hidden.sum()


class SparK(GlobalMethod):
    name = "spark"
    bf16_safe = True
    description = "SparK: restore hidden patches from the visible ones, convolved sparsely (CNN only)."
    encoder_kinds = ("cnn",)
    views_per_image = 1
    Options = SparKOptions

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return SparKModel(encoder, channels)

    def training_step(self, model: nn.Module, images: Tensor, stage: Stage, generator: torch.Generator) -> Tensor:
        grid = max(stage.image_size // model.patch_size, MIN_GRID)
        views = augment.random_resized_crop(images, grid * model.patch_size, generator, scale=(0.67, 1.0))
        views = augment.normalize(augment.random_flip(views, generator, horizontal=True, vertical=True))
        visible = visible_grid(len(views), grid, grid, self.options.mask_ratio, generator, views.device)
        return hidden_patch_loss(model(views, visible), views, visible, model.patch_size)


@hookimpl
def ssl_bench_register_methods(register):
    register(SparK)
