"""MAE (He et al., CVPR 2022) on a ViT encoder (``encoder = "vit_tiny_patch16_224"``, say).

Three patches in four are hidden; the encoder sees the visible ones only, and a light transformer decoder, given
mask tokens in the hidden places, predicts their pixels, normalised per patch (lightly's masked ViT and MAE
decoder; the masking is drawn from the step's generator, not from torch's global one as lightly's is).

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et al. 2021:
100 epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step. Kept from MAE: mask ratio 0.75,
the loss on per-patch normalised pixels of the hidden patches only, fixed sine-cosine position embeddings and
MAE's weight initialisation (lightly's), views of random resized crops at scale 0.2-1 with flips and no colour
changes. Changed: a decoder of 4 blocks of 256 dimensions, not 8 of 512 (the encoders here are ViT-tiny or -small,
not ViT-L); Adam at LD's 1e-3, not AdamW 1.5e-4 x batch / 256 with warm-up and weight decay 0.05.
A ViT only: a CNN has no tokens to hide (SparK is masked modelling for CNNs).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM, MaskedVisionTransformerTIMM
from lightly.models.modules.masked_vision_transformer_timm import init_weights
from torch import nn

from ssl_bench.api import Stage, augment, hookimpl, require_fractions, require_positive
from ssl_bench_methods._global import GlobalMethod


@dataclass(frozen=True)
class MAEOptions:
    mask_ratio: float = 0.75
    decoder_dim: int = 256
    decoder_depth: int = 4
    decoder_heads: int = 8

    def __post_init__(self) -> None:
        require_positive(self, ("decoder_dim", "decoder_depth", "decoder_heads"), "mae")
        require_fractions(self, ("mask_ratio",), "mae")


class MAEModel(nn.Module):
    """The encoder's ViT behind lightly's masking wrapper, and the decoder for the stage's grid of patches."""

    def __init__(self, encoder: nn.Module, options: MAEOptions, stage: Stage, channels: int) -> None:
        super().__init__()
        self.encoder = encoder
        vit = encoder.model
        self.patch_size = vit.patch_embed.patch_size[0]
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        # lightly's decoder owns the mask token, the fixed sine-cosine position embedding, the blocks and the norm;
        # the embedding into it and the prediction out of it are MAE's own linear layers, initialised as lightly's.
        self.decoder_embed = nn.Linear(vit.embed_dim, options.decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=(view_size(stage, self.patch_size) // self.patch_size) ** 2,
            embed_dim=options.decoder_dim,
            depth=options.decoder_depth,
            num_heads=options.decoder_heads,
            num_prefix_tokens=vit.num_prefix_tokens,
        )
        self.decoder_predict = nn.Linear(options.decoder_dim, self.patch_size**2 * channels)
        init_weights(self.decoder_embed)
        init_weights(self.decoder_predict)

    def predicted_pixels(self, views: torch.Tensor, hidden: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """The decoder's pixels of the ``hidden`` token indices, from the encoder's view of the ``visible`` ones."""
        encoded = self.decoder_embed(self.backbone.encode(views, idx_keep=visible))
        tokens = encoded.new_zeros(len(views), hidden.shape[1] + visible.shape[1], encoded.shape[-1])
        decoded = self.decoder(utils.set_at_index(tokens, visible, encoded), idx_mask=hidden)
        return self.decoder_predict(utils.get_at_index(decoded, hidden))

    def target_pixels(self, views: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The pixels of the ``hidden`` token indices, normalised per patch (MAE's ``norm_pix_loss``)."""
        patches = utils.patchify(views, self.patch_size)
        target = utils.get_at_index(patches, hidden - self.backbone.vit.num_prefix_tokens)
        return (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()


def view_size(stage: Stage, patch_size: int) -> int:
    """The stage's size, down to whole patches (at least one)."""
    return max(stage.image_size // patch_size, 1) * patch_size


def token_masks(
    batch: int, patches: int, prefix: int, ratio: float, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token indices (prefix tokens first) to hide and to keep: ``round(ratio x patches)`` random patches per image
    are hidden (at least one kept); the prefix tokens are always kept."""
    order = augment.uniform(generator, (batch, patches)).to(device).argsort(dim=1) + prefix
    hidden_count = min(round(ratio * patches), patches - 1)
    kept_prefix = torch.arange(prefix, device=device).expand(batch, prefix)
    return order[:, :hidden_count], torch.cat([kept_prefix, order[:, hidden_count:]], dim=1)


class MAE(GlobalMethod):
    name = "mae"
    bf16_safe = True
    description = "MAE: predict the pixels of hidden patches from the visible ones (ViT only; lightly modules)."
    encoder_kinds = ("vit",)
    views_per_image = 1
    version = "2"  # 2: lightly's MaskedVisionTransformerDecoderTIMM with MAE's own embedding and prediction layers
    Options = MAEOptions

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return MAEModel(encoder, self.options, stage, channels)

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        size = view_size(stage, model.patch_size)
        views = augment.random_resized_crop(images, size, generator, scale=(0.2, 1.0))
        views = augment.normalize(augment.random_flip(views, generator, horizontal=True, vertical=True))
        patches = (size // model.patch_size) ** 2
        hidden, visible = token_masks(
            len(views), patches, model.backbone.vit.num_prefix_tokens, self.options.mask_ratio, generator, views.device
        )
        return F.mse_loss(model.predicted_pixels(views, hidden, visible), model.target_pixels(views, hidden))


@hookimpl
def ssl_bench_register_methods(register):
    register(MAE)
