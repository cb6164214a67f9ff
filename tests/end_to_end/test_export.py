"""``ssl-bench export``: a pretrained encoder out by what it is, as safetensors that load strictly, with a sidecar."""

from __future__ import annotations

import json

import timm
import torch
from safetensors.torch import load_file
from test_cli import invoke

from ssl_bench.models import create_encoder


def test_an_exported_encoder_is_the_pretrained_one_and_its_sidecar_says_what_it_is(tmp_path):
    results = tmp_path / "results"
    ran = invoke("run", "-m", "simclr", "-t", "synthetic-lung", "-p", "linear-seg", "--results", str(results))
    assert ran.exit_code == 0, ran.output
    out = tmp_path / "simclr.safetensors"
    exported = invoke("export", "-m", "simclr", "--out", str(out), "--results", str(results))
    assert exported.exit_code == 0, exported.output
    (pretraining,) = (results / "cache" / "pretrain").iterdir()
    original = torch.load(pretraining / "encoder.pt", weights_only=True)
    weights = load_file(out)
    assert weights.keys() == original.keys() and all(torch.equal(weights[k], original[k]) for k in original)
    encoder = create_encoder("vgg16_bn_tiny", in_chans=1)
    encoder.load_state_dict(weights, strict=True)  # the README's two lines
    sidecar = json.loads((tmp_path / "simclr.safetensors.json").read_text())
    assert sidecar["architecture"] == "vgg16_bn_tiny" and sidecar["in_chans"] == 1
    assert sidecar["method_variant"] == "simclr" and sidecar["pool"]["id"] == "synthetic-cxr"
    assert sidecar["feature_channels"] == [info.channels for info in encoder.feature_info]
    assert sidecar["pretraining_id"] == pretraining.name and sidecar["seed_index"] == 0
    # What is not there is a one-line error that lists what is.
    missing = invoke("export", "-m", "moco", "--out", str(tmp_path / "x.safetensors"), "--results", str(results))
    assert missing.exit_code == 2 and "no finished pretraining of moco" in missing.output
    assert "simclr on synthetic-cxr, seed 0" in missing.output


def test_an_exported_vit_loads_into_timms_own_model_as_its_sidecar_says(tmp_path):
    results, vit = tmp_path / "results", "vit_tiny_patch16_224"
    args = ["-t", "synthetic-lung", "-p", "linear-seg", "--results", str(results)]
    for encoder in ("vgg16_bn_tiny", vit):  # two pretrainings of simclr: the row's name tells them apart
        assert invoke("run", "-m", "simclr", "--encoder", encoder, *args).exit_code == 0
    out = tmp_path / "vit.safetensors"
    exported = invoke("export", "-m", f"simclr@{vit}", "--out", str(out), "--results", str(results))
    assert exported.exit_code == 0, exported.output
    sidecar = json.loads((tmp_path / "vit.safetensors.json").read_text())
    assert sidecar["method_variant"] == f"simclr@{vit}" and sidecar["feature_strides"] == [4, 8, 16, 32]
    model = timm.create_model(sidecar["architecture"], in_chans=sidecar["in_chans"], **sidecar["timm_options"])
    model.prune_intermediate_layers(sidecar["pyramid_blocks"], prune_norm=True)
    weights = {key.removeprefix(sidecar["key_prefix"]): value for key, value in load_file(out).items()}
    model.load_state_dict(weights, strict=True)
    encoder = create_encoder(vit, in_chans=1)
    encoder.load_state_dict(load_file(out), strict=True)
    image = torch.rand(1, 1, 64, 64)
    with torch.no_grad():  # the two are one network: the pyramid's stride-16 map is timm's 9th block
        (ninth,) = model.eval().forward_intermediates(image, indices=[8], intermediates_only=True)
        torch.testing.assert_close(encoder.eval()(image)[2], ninth)
