"""Models Genesis (Zhou et al., MICCAI 2019 / MedIA 2021) in 2-D: learn to restore images from hand-made distortions.

Each source image is distorted by local pixel shuffling, a random non-linear intensity mapping (a cubic
Bezier curve) and in- or out-painting with noise; the shared encoder, a U-Net decoder and a 1 x 1 conv to
the input channels learn to restore the original, under a mean squared error.

The distortions and their probabilities follow the authors' code (shuffling 0.5, non-linear mapping 0.9,
painting 0.9 of which out-painting 0.8; up to 5 holes or windows, each further one with p = 0.95), moved
from 3-D sub-volumes to 2-D images and batched. One simplification: each batch shuffles pixels within
cells of one random size (up to a tenth of the image side) on a grid, half of the cells per image, where
the authors shuffle blocks of random sizes at random, possibly overlapping, places.

Schedules. ``demo``: enough to exercise the loop. ``paper``: Zhou et al. train on 64 x 64 x 32 CT
sub-volumes with SGD until the validation loss stops improving; here LD's budget (100 epochs x 1000
iterations of 8 source images, Adam 1e-3, 448 px crops).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.api import Method, Stage, augment, hookimpl
from ssl_bench.api.augment import normalize
from ssl_bench.api.nets import UNet

SHUFFLE_P = 0.5
NONLINEAR_P = 0.9
PAINT_P = 0.9
OUT_PAINT_P = 0.8
#: After the first hole (or window), each further one is added with this probability, up to MAX_BOXES.
MORE_BOXES_P = 0.95
MAX_BOXES = 5
#: Holes and windows keep this many pixels away from the image's edges.
BOX_MARGIN = 3
#: Fraction of the grid cells whose pixels are shuffled.
SHUFFLED_CELLS = 0.5
#: Points on which the Bezier curve is evaluated before interpolating (the authors use 100000 on CPUs).
BEZIER_SAMPLES = 1000
#: Random sub-images, as the authors' random sub-volumes.
CROP_SCALE = (0.25, 1.0)


@dataclass(frozen=True)
class Boxes:
    """K axis-aligned boxes per image, in pixels: (B, K) integer tensors and which boxes are ``present``."""

    top: Tensor
    left: Tensor
    height: Tensor
    width: Tensor
    present: Tensor

    def mask(self, height: int, width: int, device: torch.device) -> Tensor:
        """(B, 1, height, width) bool on ``device``: inside any present box."""
        rows = torch.arange(height, device=device).view(1, 1, -1, 1)
        cols = torch.arange(width, device=device).view(1, 1, 1, -1)
        top, left, bottom, right, present = (
            edge.to(device).view(*edge.shape, 1, 1)
            for edge in (self.top, self.left, self.top + self.height, self.left + self.width, self.present)
        )
        inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right) & present
        return inside.any(dim=1, keepdim=True)


def random_boxes(
    batch: int, size: tuple[int, int], side_fraction: tuple[float, float], generator: torch.Generator, first: bool
) -> Boxes:
    """Up to MAX_BOXES boxes per image, each side a fraction ~ U(side_fraction) of the image's, placed
    uniformly at least BOX_MARGIN pixels from the edges; the first box is always present if ``first``, and each
    next one with MORE_BOXES_P while the chain holds."""
    draws = augment.uniform(generator, (5, batch, MAX_BOXES))
    chain = draws[4] < MORE_BOXES_P
    if first:
        chain[:, 0] = True
    extents = []
    for axis, length in enumerate(size):
        low, high = side_fraction
        side = torch.floor(length * (low + (high - low) * draws[axis]))
        room = (length - side - 2 * BOX_MARGIN + 1).clamp(min=1)
        start = (BOX_MARGIN + torch.floor(room * draws[2 + axis])).clamp(max=length - side)
        extents.append((start.long(), side.long()))
    (top, height), (left, width) = extents
    return Boxes(top, left, height, width, present=chain.cumprod(dim=1).bool())


def in_paint(images: Tensor, holes: Boxes, generator: torch.Generator) -> Tensor:
    """Replace the pixels inside ``holes`` with uniform noise."""
    noise = augment.uniform(generator, images.shape).to(images)
    return torch.where(holes.mask(*images.shape[-2:], images.device), noise, images)


def out_paint(images: Tensor, windows: Boxes, generator: torch.Generator) -> Tensor:
    """Keep the pixels inside ``windows``; replace all others with uniform noise."""
    noise = augment.uniform(generator, images.shape).to(images)
    return torch.where(windows.mask(*images.shape[-2:], images.device), images, noise)


def _bezier(controls: Tensor, t: Tensor) -> Tensor:
    """Cubic Bezier from 0 to 1 with inner control values ``controls`` (B, 2), at parameters ``t`` (T,)."""
    t = t.view(1, -1)
    return 3 * (1 - t) ** 2 * t * controls[:, :1] + 3 * (1 - t) * t**2 * controls[:, 1:] + t**3


def _interpolate(values: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Per row, ``np.interp(values, xp, fp)``: (B, N) values, (B, T) increasing ``xp`` and their ``fp``."""
    right = torch.searchsorted(xp, values).clamp(1, xp.shape[1] - 1)
    x0, x1 = xp.gather(1, right - 1), xp.gather(1, right)
    f0, f1 = fp.gather(1, right - 1), fp.gather(1, right)
    weight = ((values - x0) / (x1 - x0).clamp_min(torch.finfo(xp.dtype).eps)).clamp(0, 1)
    return f0 + weight * (f1 - f0)


def nonlinear_intensity(images: Tensor, controls: Tensor, inverted: Tensor) -> Tensor:
    """Map intensities through the Bezier curve from (0, 0) to (1, 1) with inner points ``controls``
    (B, 2, 2) as (x, y) rows: the curve's sorted x values map to its sorted y values, or, where
    ``inverted`` (B,), to its y values in reverse parameter order (x(t) -> y(1 - t) on a monotone
    curve, which inverts intensities), as the authors pair them."""
    t = torch.linspace(0, 1, BEZIER_SAMPLES, dtype=torch.float64)
    x, y = _bezier(controls[:, :, 0], t), _bezier(controls[:, :, 1], t)
    targets = torch.where(inverted.view(-1, 1), y.flip(1), y.sort(dim=1).values)
    xp, fp = x.sort(dim=1).values.to(images.device), targets.to(images.device)
    mapped = _interpolate(images.flatten(start_dim=1).double(), xp, fp)
    return mapped.view_as(images).to(images.dtype)


def shuffle_pixels(images: Tensor, cell: int, chosen: Tensor, generator: torch.Generator) -> Tensor:
    """Permute the pixels (all channels together) within each ``chosen`` (B, H // cell, W // cell) cell of
    side ``cell``; the rows and columns beyond the last whole cell stay as they are."""
    batch, channels, height, width = images.shape
    rows, cols = height // cell, width // cell
    covered = images[..., : rows * cell, : cols * cell]
    cells = covered.reshape(batch, channels, rows, cell, cols, cell).transpose(3, 4).flatten(start_dim=4)
    order = augment.uniform(generator, (batch, 1, rows, cols, cell * cell)).argsort(dim=-1).to(images.device)
    shuffled = cells.gather(-1, order.expand_as(cells))
    cells = torch.where(chosen.to(images.device).view(batch, 1, rows, cols, 1), shuffled, cells)
    restored = cells.view(batch, channels, rows, cols, cell, cell).transpose(3, 4).reshape_as(covered)
    result = images.clone()
    result[..., : rows * cell, : cols * cell] = restored
    return result


def _random_shuffle(images: Tensor, generator: torch.Generator) -> Tensor:
    largest = max(2, min(images.shape[-2:]) // 10)
    cell = int(torch.randint(2, largest + 1, (1,), generator=generator))
    grid = (images.shape[0], images.shape[-2] // cell, images.shape[-1] // cell)
    return shuffle_pixels(images, cell, augment.uniform(generator, grid) < SHUFFLED_CELLS, generator)


def _random_nonlinear(images: Tensor, generator: torch.Generator) -> Tensor:
    draws = augment.uniform(generator, (images.shape[0], 5))
    return nonlinear_intensity(images, draws[:, :4].view(-1, 2, 2), draws[:, 4] < 0.5)


def _random_paint(images: Tensor, generator: torch.Generator) -> Tensor:
    batch, size = images.shape[0], images.shape[-2:]
    holes = random_boxes(batch, size, (1 / 6, 1 / 3), generator, first=False)
    windows = random_boxes(batch, size, (3 / 7, 4 / 7), generator, first=True)
    outer = augment.uniform(generator, (batch,)) < OUT_PAINT_P
    return augment.select(outer, out_paint(images, windows, generator), in_paint(images, holes, generator))


def distort(images: Tensor, generator: torch.Generator) -> Tensor:
    """Models Genesis' distortions of images in [0, 1], each applied per image with its probability."""
    for transform, probability in (
        (_random_shuffle, SHUFFLE_P),
        (_random_nonlinear, NONLINEAR_P),
        (_random_paint, PAINT_P),
    ):
        apply = augment.uniform(generator, (images.shape[0],)) < probability
        images = augment.select(apply, transform(images, generator), images)
    return images


class GenesisModel(nn.Module):
    def __init__(self, encoder: nn.Module, channels: int) -> None:
        super().__init__()
        self.unet = UNet(encoder)
        self.restore = nn.Conv2d(self.unet.out_channels, channels, kernel_size=1)

    @property
    def encoder(self) -> nn.Module:
        # A property, not a second registration: the state dict names the encoder once.
        return self.unet.encoder

    def forward(self, distorted: Tensor) -> Tensor:
        """Restored images in [0, 1] from distorted ones in [0, 1]."""
        return torch.sigmoid(self.restore(self.unet(normalize(distorted))))


class ModelsGenesis(Method):
    name = "models-genesis"
    bf16_safe = True
    description = "Models Genesis: restore images after shuffling, non-linear intensity and in/out-painting."
    views_per_image = 1

    def stages(self, scale: str) -> list[Stage]:
        if scale == "paper":
            return [Stage("restore", epochs=100, steps_per_epoch=1000, batch_size=8, image_size=448, lr=1e-3)]
        return [Stage("restore", epochs=2, steps_per_epoch=10, batch_size=16, image_size=64, lr=1e-3)]

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return GenesisModel(encoder, channels)

    def training_step(self, model: nn.Module, images: Tensor, stage: Stage, generator: torch.Generator) -> Tensor:
        originals = augment.random_resized_crop(images, stage.image_size, generator, scale=CROP_SCALE)
        originals = augment.random_flip(originals, generator, horizontal=True, vertical=True)
        return F.mse_loss(model(distort(originals, generator)), originals)


@hookimpl
def ssl_bench_register_methods(register):
    register(ModelsGenesis)
