"""iBOT (Zhou et al., ICLR 2022) on a ViT encoder (``encoder = "vit_tiny_patch16_224"``, say).

DINO's self-distillation of the class token across multi-crop views, plus masked image modelling as
self-distillation: the student sees global views with blocks of patches hidden and predicts, at each hidden
patch, the momentum teacher's output for that patch of the whole view (lightly's masked ViT, DINO head, DINO loss
and iBOT patch loss; the block masks are drawn from the step's generator).

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et al. 2021: 100
epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step. Kept from iBOT's ViT-S/16 recipe: one head
shared by class and patch tokens, a 256-dimensional bottleneck and a weight-normalised last layer frozen for the first
1% of steps (one of 100 epochs), student temperature 0.1, teacher temperature warmed from 0.04 to 0.07 (over 30 of 100
epochs, here the first 30% of steps), centre momentum 0.9, teacher momentum from 0.996 to 1 on a cosine, BEiT's block
masks hiding 10-50% of the patches, two global crops at scale 0.4-1 beside local crops at 0.05-0.4 (96 px beside 224,
here scaled to the stage's size), both losses weighted 1. Changed: 2048 output dimensions, not 8192 (medical pools have
far fewer modes than ImageNet); hidden layers four times the ViT's width, not 2048; six local crops, not ten (CPU cost);
half of the global views masked, as DINOv2 masks them; Adam at LD's 1e-3, not AdamW with weight decay 0.04-0.4.
"""

from lightly.models.modules.heads import DINOProjectionHead

from ssl_bench.api import hookimpl
from ssl_bench_methods._global import Crops
from ssl_bench_methods._masked_distillation import MaskedDistillation, MaskedDistillationOptions


class IBOT(MaskedDistillation):
    name = "ibot"
    description = "iBOT: DINO on class tokens plus self-distilled masked patches (ViT only; lightly modules)."
    global_crops = Crops(count=2, scale=(0.4, 1.0), relative_size=1.0)
    local_crops = Crops(count=6, scale=(0.05, 0.4), relative_size=96 / 224)
    views_per_image = global_crops.count + local_crops.count
    head = DINOProjectionHead
    Options = MaskedDistillationOptions


@hookimpl
def ssl_bench_register_methods(register):
    register(IBOT)
