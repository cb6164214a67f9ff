import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.models import (
    FeatureInfo,
    PyramidEncoder,
    SegmentationModel,
    TimmEncoder,
    UNet,
    UNetDecoder,
    VGG16BNTiny,
    create_encoder,
    encoder_kind,
)

VGG_LAYOUT = [16, 16, "M", 32, 32, "M", 64, 64, 64, "M", 128, 128, 128, "M", 128, 128, 128, "M"]


def convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def assert_kaiming_fan_out_init(module: nn.Module) -> None:
    """Every conv ~ N(0, 2 / fan_out), fan_out = out_channels * k * k, with zero bias; BatchNorm 1 and 0.

    Sample mean and std are allowed 4 standard errors: the std's relative one is about 1 / sqrt(2n), so
    the 16 -> 1 output conv (144 weights) gets about 24%, the decoder's large convs under 2%.
    """
    for conv in convs(module):
        weights = conv.weight.double()
        count = weights.numel()
        expected_std = math.sqrt(2 / (conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]))
        assert abs(weights.mean().item()) < 4 * expected_std / math.sqrt(count)
        assert weights.std().item() == pytest.approx(expected_std, rel=4 / math.sqrt(2 * count))
        assert torch.all(conv.bias == 0)
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(n.weight == 1) and torch.all(n.bias == 0) for n in norms)


def test_vgg_returns_the_five_pre_pool_activations_at_448() -> None:
    encoder = VGG16BNTiny(in_chans=3).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 448, 448))
    expected = [(16, 448), (32, 224), (64, 112), (128, 56), (128, 28)]
    assert [(f.shape[1], f.shape[2]) for f in features] == expected
    assert all(f.shape[0] == 1 and f.shape[2] == f.shape[3] for f in features)
    assert encoder.feature_info == [FeatureInfo(c, 448 // s) for c, s in expected]
    # Pre-pool activations are post-ReLU: nothing negative.
    assert all(f.min() >= 0 for f in features)


def test_vgg_parameter_count_follows_the_layer_list() -> None:
    for in_chans in (1, 3):
        expected, channels = 0, in_chans
        for item in VGG_LAYOUT:
            if item == "M":
                continue
            expected += channels * item * 9 + item  # conv weight + bias
            expected += 2 * item  # BN weight + bias
            channels = item
        encoder = VGG16BNTiny(in_chans)
        assert sum(p.numel() for p in encoder.parameters()) == expected
    assert expected == 922_896  # the spec's "~0.92 M" with 3 input channels
    assert [c.out_channels for c in convs(encoder)] == [c for c in VGG_LAYOUT if c != "M"]


def test_vgg_init_is_kaiming_fan_out_with_zero_bias_and_unit_batchnorm() -> None:
    torch.manual_seed(0)
    encoder = VGG16BNTiny()
    assert all(conv.kernel_size == (3, 3) and conv.padding == (1, 1) for conv in convs(encoder))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in encoder.modules()) == 13
    assert_kaiming_fan_out_init(encoder)


def test_vgg_decoder_and_head_reproduce_the_ld_channel_sequence() -> None:
    model = SegmentationModel(create_encoder("vgg16_bn_tiny"))
    decoder = model.unet.decoder
    pairs = [(c.in_channels, c.out_channels) for c in convs(decoder)]
    assert pairs == [(256, 128), (128, 64), (128, 64), (64, 32), (64, 32), (32, 16)]
    assert len(decoder.levels[-1].convs) == 0  # the last concatenation has no convs
    assert len(decoder.to_full_resolution) == 0
    assert decoder.out_channels == model.unet.out_channels == 32
    assert [(c.in_channels, c.out_channels) for c in convs(model.head)] == [(32, 16), (16, 16), (16, 1)]
    for conv in convs(decoder) + convs(model.head):
        assert conv.kernel_size == (3, 3) and conv.padding == (1, 1)
    decoder_norms = [m.num_features for m in decoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert decoder_norms == [128, 64, 64, 32, 32, 16]


@pytest.mark.parametrize("name", ["vgg16_bn_tiny", "resnet18"])
def test_transfer_decoder_and_head_get_the_released_kaiming_init(name: str) -> None:
    torch.manual_seed(0)
    model = SegmentationModel(create_encoder(name, in_chans=1))
    assert_kaiming_fan_out_init(model.unet.decoder)
    assert_kaiming_fan_out_init(model.head)
    # The released output conv: std sqrt(2 / 9) = 0.47, not PyTorch's default 1 / sqrt(3 * 144) = 0.048.
    assert convs(model.head)[-1].weight.std().item() > 0.3


def test_the_transfer_model_keeps_its_encoders_weights() -> None:
    encoder = create_encoder(in_chans=1)
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.fill_(0.25)  # unlike any init
    model = SegmentationModel(encoder)
    assert all(torch.all(p == 0.25) for p in model.encoder.parameters())


def test_the_pretraining_unet_decoder_keeps_pytorchs_default_init_as_the_released_one() -> None:
    # PyTorch's default: weights U(+-1 / sqrt(fan_in)), std 1 / sqrt(3 fan_in); biases drawn the same way.
    torch.manual_seed(0)
    first = convs(UNet(create_encoder()).decoder)[0]
    fan_in = first.in_channels * 9
    assert first.weight.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.02)
    assert first.bias.abs().max().item() > 0


def test_decoder_upsamples_by_nearest_neighbour() -> None:
    # With identity-like features, the level output before convs is visible in the last (conv-free) level.
    decoder = UNetDecoder([FeatureInfo(1, 1), FeatureInfo(1, 2)])
    deep = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    skip = torch.zeros(1, 1, 4, 4)
    out = decoder([skip, deep])
    expected = torch.tensor([[1.0, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    assert out.shape == (1, 2, 4, 4)
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(out[0, 1], skip[0, 0])


def test_unet_features_have_the_input_size_for_1_and_3_channels() -> None:
    for in_chans in (1, 3):
        unet = UNet(create_encoder(in_chans=in_chans)).eval()
        with torch.no_grad():
            assert unet(torch.randn(2, in_chans, 64, 48)).shape == (2, 32, 64, 48)
        assert convs(unet.encoder)[0].in_channels == in_chans


def test_padding_is_zeros_bottom_right_and_cropped_back() -> None:
    torch.manual_seed(1)
    unet = UNet(create_encoder(in_chans=1)).eval()
    x = torch.randn(1, 1, 37, 50)
    padded = torch.zeros(1, 1, 48, 64)
    padded[..., :37, :50] = x
    with torch.no_grad():
        out = unet(x)
        reference = unet(padded)[..., :37, :50]
    assert out.shape == (1, 32, 37, 50)
    torch.testing.assert_close(out, reference)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "mobilenetv3_small_050"])
def test_timm_encoder_gives_full_size_logits_at_an_odd_size(name: str) -> None:
    encoder = create_encoder(name, in_chans=1)
    assert isinstance(encoder, TimmEncoder)
    info = encoder.model.feature_info
    assert encoder.feature_info == [FeatureInfo(c, r) for c, r in zip(info.channels(), info.reduction(), strict=True)]
    model = SegmentationModel(encoder).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, 100, 75))
    assert logits.shape == (2, 1, 100, 75)
    assert torch.isfinite(logits).all()


def test_timm_decoder_follows_the_general_rule() -> None:
    # resnet18: channels 64, 64, 128, 256, 512 at reductions 2..32.
    decoder = SegmentationModel(create_encoder("resnet18")).unet.decoder
    pairs = [(c.in_channels, c.out_channels) for c in convs(decoder)]
    # 512+256=768 -> 384 -> 192; 192+128=320 -> 160 -> 80; 80+64=144 -> 72 -> 36; 36+64=100 at H/2; x2: 100 -> 50.
    assert pairs == [(768, 384), (384, 192), (320, 160), (160, 80), (144, 72), (72, 36), (100, 50)]
    assert decoder.out_channels == 50


def test_unknown_encoder_name_suggests_close_matches() -> None:
    with pytest.raises(ValueError, match=r"resnt18") as error:
        create_encoder("resnt18")
    message = str(error.value)
    assert "resnet18" in message and "timm.list_models" in message and "vgg16_bn_tiny" in message


def test_encoder_state_dict_loads_strictly_into_a_segmentation_model() -> None:
    for name in ("vgg16_bn_tiny", "resnet18"):
        torch.manual_seed(0)
        source = create_encoder(name, in_chans=1)
        torch.manual_seed(1)
        model = SegmentationModel(create_encoder(name, in_chans=1))
        model.encoder.load_state_dict(source.state_dict(), strict=True)
        loaded = model.encoder.state_dict()
        assert list(loaded) == list(source.state_dict())
        assert all(torch.equal(value, loaded[key]) for key, value in source.state_dict().items())
    # The encoder is registered once: its keys appear only under unet.encoder.
    keys = model.state_dict().keys()
    assert not any(k.startswith("encoder.") for k in keys)
    assert sum(k.startswith("unet.encoder.") for k in keys) == len(source.state_dict())


def test_encoder_init_is_seeded_by_torch_rng() -> None:
    def first_weight(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return convs(create_encoder())[0].weight

    assert torch.equal(first_weight(3), first_weight(3))
    assert not torch.equal(first_weight(3), first_weight(4))


# --- plain transformers as a feature pyramid ----------------------------------------------------------------


def _vit_and_its_twin(name: str = "vit_tiny_patch16_224") -> tuple[PyramidEncoder, nn.Module]:
    """The pyramid encoder and, with the same seed, timm's model unpruned: the reference the maps are read from."""
    torch.manual_seed(0)
    encoder = create_encoder(name, in_chans=1)
    torch.manual_seed(0)
    twin = timm.create_model(name, num_classes=0, in_chans=1, dynamic_img_size=True, dynamic_img_pad=True)
    return encoder, twin.eval()


def _block_map(twin: nn.Module, x: torch.Tensor, block: int) -> torch.Tensor:
    """Block ``block``'s patch tokens as a map, computed step by step from timm's parts."""
    tokens = twin._pos_embed(twin.patch_embed(F.pad(x, (0, -x.shape[-1] % 16, 0, -x.shape[-2] % 16))))
    tokens = twin.norm_pre(twin.patch_drop(tokens))
    for layer in twin.blocks[: block + 1]:
        tokens = layer(tokens)
    grid = -(-x.shape[-2] // 16), -(-x.shape[-1] // 16)
    return tokens[:, twin.num_prefix_tokens :].transpose(1, 2).reshape(x.shape[0], -1, *grid)


@pytest.mark.parametrize("size", [28, 64, 100])
def test_a_vit_gives_blocks_3_6_9_12_at_strides_4_8_16_32_of_any_input_size(size: int) -> None:
    encoder, twin = _vit_and_its_twin()
    assert isinstance(encoder, PyramidEncoder) and encoder_kind("vit_tiny_patch16_224") == "vit"
    assert [(i.channels, i.reduction) for i in encoder.feature_info] == [(192, 4), (192, 8), (192, 16), (192, 32)]
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        maps = encoder.eval()(x)
        blocks = [_block_map(twin, x, block) for block in (2, 5, 8, 11)]
    assert [tuple(m.shape[-2:]) for m in maps] == [(math.ceil(size / s),) * 2 for s in (4, 8, 16, 32)]
    # Up: each token repeated over the cells it covers; at a whole multiple, repeat_interleave exactly.
    if size % 16 == 0:
        torch.testing.assert_close(maps[0], blocks[0].repeat_interleave(4, -1).repeat_interleave(4, -2))
        torch.testing.assert_close(maps[1], blocks[1].repeat_interleave(2, -1).repeat_interleave(2, -2))
    torch.testing.assert_close(maps[2], blocks[2])
    if size % 32 == 0:  # down: the max over each 2x2 of tokens
        torch.testing.assert_close(maps[3], F.max_pool2d(blocks[3], 2))


def test_a_vit_encoder_holds_only_what_it_uses_and_a_frozen_one_is_the_whole_transformer() -> None:
    encoder, twin = _vit_and_its_twin()
    unused = {key for key in twin.state_dict() if key.startswith(("norm.", "fc_norm.", "head."))}
    assert {f"model.{key}" for key in set(twin.state_dict()) - unused} == set(encoder.state_dict())
    model = SegmentationModel(encoder)
    decoder = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("unet.encoder."))
    assert sum(p.numel() for p in encoder.parameters()) + decoder == sum(p.numel() for p in model.parameters())
    assert model(torch.zeros(1, 1, 44, 44)).shape == (1, 1, 44, 44)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("vit_tiny_patch16_224", "vit"), ("deit_tiny_patch16_224", "vit"), ("resnet18", "cnn"), ("mobilevit_xxs", "cnn")],
)
def test_encoder_kinds(name: str, kind: str) -> None:
    assert encoder_kind(name) == kind
    assert isinstance(create_encoder(name, in_chans=1), PyramidEncoder) == (kind == "vit")
