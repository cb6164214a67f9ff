"""Encoders from files scored with no code: [checkpoints.NAME] rows, every file format and layout, strict loading."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from test_cli import invoke

from ssl_bench.checkpoints import Checkpoint, checkpoint_encoder, load_checkpoint, read_checkpoints
from ssl_bench.errors import ConfigError, DataError
from ssl_bench.models import create_encoder


def trained(name: str = "vgg16_bn_tiny", channels: int = 1) -> dict[str, torch.Tensor]:
    """An encoder's state with weights no fresh encoder has."""
    torch.manual_seed(7)
    return {key: value + 1 if value.is_floating_point() else value for key, value in
            create_encoder(name, channels).state_dict().items()}  # fmt: skip


def loaded(path: Path, prefix: str = "", name: str = "vgg16_bn_tiny", channels: int = 1) -> dict[str, torch.Tensor]:
    encoder = create_encoder(name, channels)
    load_checkpoint(encoder, Checkpoint("mine", path, prefix, "0" * 64))
    return encoder.state_dict()


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize(
    ("layout", "prefix"),
    [("bare", ""), ("state_dict", ""), ("model", ""), ("module.", "module."), ("backbone.", "backbone.")],
)
def test_a_torch_checkpoint_loads_bare_nested_or_prefixed(tmp_path: Path, layout: str, prefix: str) -> None:
    state = trained()
    if layout in ("state_dict", "model"):
        content = {layout: state, "epoch": 100}
    else:
        content = {f"{prefix}{key}": value for key, value in state.items()}
    torch.save(content, tmp_path / "encoder.pt")
    assert same(loaded(tmp_path / "encoder.pt", prefix), state)


def test_safetensors_and_timms_own_names_load(tmp_path: Path) -> None:
    save_file(trained(), str(tmp_path / "encoder.safetensors"))
    assert same(loaded(tmp_path / "encoder.safetensors"), trained())
    # A timm encoder's file carries timm's names; ssl-bench wraps the model as "model.".
    timm_state = {key.removeprefix("model."): value for key, value in trained("resnet18", 3).items()}
    torch.save(timm_state, tmp_path / "resnet18.pth")
    assert same(loaded(tmp_path / "resnet18.pth", name="resnet18", channels=3), trained("resnet18", 3))


def test_a_file_that_does_not_fit_is_one_line_naming_keys_and_guessing_the_prefix(tmp_path: Path) -> None:
    state = trained()
    torch.save({f"module.{key}": value for key, value in state.items()}, tmp_path / "ddp.pt")
    with pytest.raises(DataError, match=r'missing, e\.g\. .*unexpected, e\.g\. module\..*add prefix = "module\."'):
        loaded(tmp_path / "ddp.pt")
    torch.save({key: value for key, value in state.items() if "0.0" not in key}, tmp_path / "partial.pt")
    with pytest.raises(DataError, match=r"does not fit the run's encoder: \d+ missing, e\.g\. "):
        loaded(tmp_path / "partial.pt")
    wider = dict(state, **{"stages.4.2.0.weight": torch.zeros(128, 64, 3, 3)})
    torch.save(wider, tmp_path / "wider.pt")
    with pytest.raises(DataError, match=r"stages.4.2.0.weight is \(128, 64, 3, 3\), the encoder's \(128, 128, 3, 3\)"):
        loaded(tmp_path / "wider.pt")
    (tmp_path / "junk.pt").write_bytes(b"not weights")
    with pytest.raises(DataError, match=r"junk\.pt cannot be read as weights"):
        loaded(tmp_path / "junk.pt")


def test_checkpoint_tables_are_checked_before_any_work(tmp_path: Path) -> None:
    torch.save(trained(), tmp_path / "a.pt")
    good = read_checkpoints({"mine": {"file": str(tmp_path / "a.pt")}}, {"simclr"})
    assert good["mine"].file == (tmp_path / "a.pt").resolve() and len(good["mine"].sha256) == 64
    bad = [
        ({"mine": {"file": str(tmp_path / "none.pt")}}, r"\[checkpoints\.mine\]: .*none\.pt is not a file"),
        ({"simclr": {"file": str(tmp_path / "a.pt")}}, r"named like the method simclr"),
        ({"mine": {"file": str(tmp_path / "a.pt"), "arch": "x"}}, r"has no key arch; its keys: file, prefix"),
        ({"mine": {"file": str(tmp_path / "a.pt"), "timm_weights": True}}, r"timm_weights needs the timm model's"),
        ({"mine": {"file": str(tmp_path / "a.pt"), "timm_weights": "yes"}}, r"timm_weights \(true or false\)"),
        ({"mine": {"file": str(tmp_path / "a.pt"), "encoder": "resnet1"}}, r"Did you mean resnet18"),
    ]
    for tables, message in bad:
        with pytest.raises(ConfigError, match=message):
            read_checkpoints(tables, {"simclr"})


def test_an_exported_encoder_scored_as_a_checkpoint_is_the_same_encoder_and_scores_the_same(tmp_path: Path) -> None:
    """The round trip: pretrain, export, then score the file as a row of another run: its jobs get the very
    weights the pretrained row's jobs got (the records' encoder digests are equal) and, with common random numbers
    (the default), the very same scores, bit for bit."""
    pretrained, scored = tmp_path / "pretrained", tmp_path / "scored"
    args = ["-t", "synthetic-lung", "-p", "frozen", "-p", "linear-seg", "--no-progress"]
    assert invoke("run", "-m", "simclr", *args, "--results", str(pretrained)).exit_code == 0
    exported = tmp_path / "simclr.safetensors"
    assert invoke("export", "-m", "simclr", "--out", str(exported), "--results", str(pretrained)).exit_code == 0
    run_file = tmp_path / "run.toml"
    run_file.write_text(f'methods = ["scratch"]\n[checkpoints.my-simclr]\nfile = "{exported}"\n')
    ran = invoke("run", "--config", str(run_file), *args, "--results", str(scored))
    assert ran.exit_code == 0, ran.output
    records = {}
    for folder in (pretrained, scored):
        for path in folder.glob("runs/*/result.json"):
            record = json.loads(path.read_text())
            records[record["variant"], record["protocol"]["name"]] = record
    for protocol in ("frozen", "linear-seg"):
        mine, original = records["my-simclr", protocol], records["simclr", protocol]
        assert mine["encoder_digest"] == original["encoder_digest"] and mine["job_id"] != original["job_id"]
        assert mine["seed"] == original["seed"] and mine["metrics"] == original["metrics"]
        assert records["scratch", protocol]["metrics"] != original["metrics"]
    assert records["my-simclr", "frozen"]["pretrained"] and not records["scratch", "frozen"]["pretrained"]
    assert records["my-simclr", "frozen"]["spec"]["pretraining"]["checkpoint"]["sha256"] != ""
    assert "[checkpoints.my-simclr]" in (scored / "run-config.toml").read_text()


@pytest.mark.parametrize(
    ("name", "given", "wanted"), [("vgg16_bn_tiny", 3, 1), ("vgg16_bn_tiny", 1, 3), ("resnet18", 3, 1)]
)
def test_a_stem_of_another_channel_count_is_adapted_so_grey_images_answer_as_their_colour_copies(
    tmp_path: Path, name: str, given: int, wanted: int
) -> None:
    state = trained(name, given)
    torch.save(state, tmp_path / "other.pt")
    stem = next(key for key, value in state.items() if value.ndim == 4)
    adapted = loaded(tmp_path / "other.pt", name=name, channels=wanted)
    # The rule, as a formula: to one channel the sum over channels; to C from one, the kernel over C, C times.
    rule = state[stem].sum(1, keepdim=True) if wanted == 1 else state[stem].repeat(1, wanted, 1, 1) / wanted
    torch.testing.assert_close(adapted[stem], rule)
    assert same({k: v for k, v in adapted.items() if k != stem}, {k: v for k, v in state.items() if k != stem})
    # What the rule is for: a grey image answers as its copy in every channel did (and back).
    encoders = {}
    for channels, weights in ((given, state), (wanted, adapted)):
        encoders[channels] = create_encoder(name, channels).eval()
        encoders[channels].load_state_dict(weights)
    grey = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        deepest = {channels: encoder(grey.repeat(1, channels, 1, 1))[-1] for channels, encoder in encoders.items()}
    torch.testing.assert_close(deepest[1], deepest[3], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224"])
def test_timms_released_weights_of_a_classifier_load_with_timm_weights(tmp_path: Path, name: str) -> None:
    """A file as timm releases it (the whole classifier, RGB): its encoder part loads, the stem summed to grey."""
    torch.manual_seed(3)
    released = timm.create_model(name, pretrained=False).state_dict()
    save_file(released, str(tmp_path / "model.safetensors"))
    strict = Checkpoint("imagenet", tmp_path / "model.safetensors", "", "0" * 64, name)
    with pytest.raises(DataError, match=r"unexpected, e\.g\. .*(fc|head)\..*add timm_weights = true"):
        checkpoint_encoder(strict, name, 1)
    encoder = checkpoint_encoder(dataclasses.replace(strict, timm_weights=True), name, 1).state_dict()
    stem = "conv1.weight" if name == "resnet18" else "patch_embed.proj.weight"
    for key, value in encoder.items():
        reference = released[key.removeprefix("model.")]
        expected = reference.sum(1, keepdim=True) if key == f"model.{stem}" else reference
        torch.testing.assert_close(value, expected, msg=key)
    # Only the classifier is left out: a file of other weights is refused, not loaded leniently as timm would.
    other = tmp_path / "other.safetensors"
    save_file({**released, "extra.weight": torch.zeros(1)}, str(other))
    with pytest.raises(DataError, match=r"other\.safetensors does not fit .*1 unexpected, e\.g\. model\.extra\.weight"):
        checkpoint_encoder(dataclasses.replace(strict, file=other, timm_weights=True), name, 1)
