"""Networks every method shares: the encoder (``vgg16_bn_tiny`` or any timm model) and the U-Net decoder around it."""

from ssl_bench.models import FeatureInfo, UNet, create_encoder

__all__ = ["FeatureInfo", "UNet", "create_encoder"]
