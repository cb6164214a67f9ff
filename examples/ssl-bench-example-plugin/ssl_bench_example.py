"""An example ssl-bench method plugin: a denoising autoencoder on the shared U-Net.

The network sees an image with Gaussian noise added and learns to restore the clean image. Everything
it needs comes from ``ssl_bench.api``; ssl-bench finds it through the ``ssl_bench`` entry point
declared in this package's ``pyproject.toml``.
"""

from dataclasses import dataclass

import torch
from torch import nn

from ssl_bench.api import Method, Stage, augment, hookimpl
from ssl_bench.api.nets import UNet


@dataclass(frozen=True)
class DenoiseOptions:
    noise_std: float = 0.2


class DenoisingAutoencoder(nn.Module):
    def __init__(self, encoder: nn.Module, channels: int) -> None:
        super().__init__()
        self.encoder = encoder  # the runner exports exactly this module to downstream tasks
        self.unet = UNet(encoder)
        self.reconstruct = nn.Conv2d(self.unet.out_channels, channels, kernel_size=3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(self.unet(images))


class Denoise(Method):
    name = "denoise"
    description = "Example plugin: denoising autoencoder on the shared U-Net."
    views_per_image = 1
    Options = DenoiseOptions

    def stages(self, scale: str) -> list[Stage]:
        if scale == "paper":
            return [Stage("denoise", epochs=100, steps_per_epoch=1000, batch_size=4, image_size=448, lr=1e-3)]
        return [Stage("denoise", epochs=1, steps_per_epoch=10, batch_size=8, image_size=64, lr=1e-3)]

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return DenoisingAutoencoder(encoder, channels)

    def training_step(self, model, images, stage, generator):
        clean = augment.normalize(augment.random_resized_crop(images, stage.image_size, generator, scale=(0.5, 1.0)))
        noise = torch.randn(clean.shape, generator=generator).to(clean.device) * self.options.noise_std
        return nn.functional.mse_loss(model(clean + noise), clean)


@hookimpl
def ssl_bench_register_methods(register):
    register(Denoise)
