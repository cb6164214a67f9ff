"""A DINOv2-style method (Oquab et al., TMLR 2024) on a ViT encoder, as lightly's DINOv2 example composes it.

iBOT's objective (DINO's class-token loss across multi-crop views and the self-distilled hidden patches, see
``ibot.py``) plus the KoLeo regulariser, which spreads the student's class tokens of each global view over the
batch (lightly's masked ViT, DINOv2 head, DINO and iBOT patch losses, KoLeo loss; block masks drawn from the step's
generator).

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et al. 2021: 100
epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step. Kept from DINOv2 (and lightly's example):
KoLeo weighted 0.1, half of the global views masked by BEiT's blocks hiding 10-50% of their patches, student temperature
0.1, teacher temperature warmed from 0.04 to 0.07 over the first 30% of training, teacher momentum from 0.992 to 1 on a
cosine, centre momentum 0.9, global crops at scale 0.32-1 and local crops at 0.05-0.32 (98 px beside 224, here scaled to
the stage's size), a 256-dimensional bottleneck and a weight-normalised last layer frozen for the first 1% of steps (one
of 100 epochs), one head for class and patch tokens (lightly's default). Changed: 2048 output dimensions, not 65,536;
hidden layers four times the ViT's width, not 2048; six local crops, not eight (CPU cost); the teacher's outputs centred
by a running mean (DINO's) as lightly does, not by Sinkhorn-Knopp; Adam at LD's 1e-3, not AdamW with weight decay
0.04-0.2, layer-wise decay and stochastic depth. Not the whole of DINOv2: no register tokens, no high-resolution phase,
no distillation from a larger model.
"""

from dataclasses import dataclass

from lightly.models.modules.heads import DINOv2ProjectionHead

from ssl_bench.api import hookimpl
from ssl_bench_methods._global import Crops
from ssl_bench_methods._masked_distillation import MaskedDistillation, MaskedDistillationOptions


@dataclass(frozen=True)
class DINOv2Options(MaskedDistillationOptions):
    base_momentum: float = 0.992
    koleo_weight: float = 0.1


class DINOv2(MaskedDistillation):
    name = "dinov2"
    description = "DINOv2-style: iBOT's losses plus KoLeo spreading the class tokens (ViT only; lightly modules)."
    global_crops = Crops(count=2, scale=(0.32, 1.0), relative_size=1.0)
    local_crops = Crops(count=6, scale=(0.05, 0.32), relative_size=98 / 224)
    views_per_image = global_crops.count + local_crops.count
    head = DINOv2ProjectionHead
    Options = DINOv2Options


@hookimpl
def ssl_bench_register_methods(register):
    register(DINOv2)
