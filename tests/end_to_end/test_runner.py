"""The runner: job identity, protocols and their order, determinism, caching, resume after SIGKILL, pools."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_bench.config import resolve_config
from ssl_bench.engine import Engine
from ssl_bench.errors import ConfigError, DataError
from ssl_bench.planning import build_plan
from ssl_bench.plugins import get_registry
from ssl_bench.pools import PoolSource, prepare_pool
from ssl_bench.pretraining import finished_pretraining
from ssl_bench.record import SCHEMA_VERSION, ResultRecord, read_record
from ssl_bench.resources import PeakMemory
from ssl_bench.results import selected_model_path
from ssl_bench.status import pretrainings_left
from ssl_bench.task import SegmentationData, SegmentationSplit


def _config(results: Path, **values):
    values.setdefault("protocols", ["finetune"])
    return resolve_config(values, {"results": str(results)}, get_registry())


def default_protocols() -> list[str]:
    return [name for name, protocol in get_registry().protocols.items() if protocol.default_run]


def _run(config) -> list[ResultRecord]:
    executor = Engine(config, torch.device("cpu"), progress=False, echo=lambda line: None)
    summary = executor.run(build_plan(config, get_registry()))
    assert not summary.failed, [failure.error for failure in summary.failed]
    return [read_record(path) for path in summary.written]


def _dice(result: ResultRecord) -> list[float]:
    return result.metrics["dice"].per_image


def _by_protocol(results: list[ResultRecord]) -> dict[str, ResultRecord]:
    return {result.protocol.name: result for result in results}


def test_job_ids_hash_the_resolved_spec(tmp_path):
    def plan(**values):
        return build_plan(_config(tmp_path, tasks=["synthetic-vessel"], **values), get_registry())

    base = plan(methods={"simclr": {}}, seeds=2)
    assert [j.id for j in base.jobs] == [j.id for j in plan(methods={"simclr": {}}, seeds=2).jobs]
    # finetune continues from frozen: each seed has both jobs, frozen first.
    assert [j.protocol.name for j in base.jobs] == ["frozen", "finetune"] * 2
    assert len({j.id for j in base.jobs}) == 4 and len({j.seed for j in base.jobs}) == 4
    variant = plan(methods={"simclr": {"temperature": 0.2}})
    assert variant.jobs[0].id not in {j.id for j in base.jobs}
    assert variant.jobs[0].spec["variant"] == "simclr(temperature=0.2)"
    assert variant.jobs[0].pretraining.spec["pool"]["id"] == "synthetic-fundus"
    assert plan(methods={"simclr": {}}, budget="paper").jobs[0].id not in {j.id for j in base.jobs}


def test_with_common_random_numbers_every_row_of_a_task_protocol_and_seed_index_shares_its_seed(tmp_path):
    def jobs(common: object):
        methods = {"simclr": {}, "scratch": {}}
        config = _config(tmp_path, tasks=["synthetic-vessel"], methods=methods, seeds=2, common_random_numbers=common)
        return build_plan(config, get_registry()).jobs

    common = jobs(True)
    seeds = {(job.variant, job.protocol.name, job.seed_index): job.seed for job in common}
    # scratch has no frozen phase: simclr's frozen and finetune, scratch's finetune, per seed index.
    assert len(seeds) == 6 and len(set(seeds.values())) == 4  # one per protocol and seed index
    assert all(seeds["simclr", "finetune", i] == seeds["scratch", "finetune", i] for i in (0, 1))
    own = jobs(False)
    assert len({job.seed for job in own}) == len(own) == 6
    # The seeding is part of a job's identity; a run with its own seeds per job keeps the ids it always had.
    assert not {job.id for job in own} & {job.id for job in common}
    assert all("seeding" not in job.spec for job in own) and all(job.spec["seeding"] == "common" for job in common)
    with pytest.raises(ConfigError, match="common_random_numbers must be true or false; got 'yes'"):
        jobs("yes")


def test_finetune_continues_from_frozen_but_scratch_trains_end_to_end_once(tmp_path):
    simclr = build_plan(_config(tmp_path, methods={"simclr": {}}, tasks=["synthetic-vessel"]), get_registry())
    frozen, finetune = simclr.jobs
    assert finetune.upstream is frozen and finetune.spec["continues_from"] == frozen.id
    assert simclr.upstream_ids == {frozen.id}
    # The released random-init baseline: no frozen phase, the whole network for the fine-tune epochs.
    scratch = build_plan(_config(tmp_path, methods={"scratch": {}}, tasks=["synthetic-vessel"]), get_registry())
    (job,) = scratch.jobs
    assert job.protocol.name == "finetune" and job.upstream is None
    # At the demo scale fine-tuning is half the frozen phase, and scratch gets both phases' epochs end to end.
    assert (frozen.settings.epochs, finetune.settings.epochs_for(pretrained=True)) == (8, 4)
    assert job.settings.epochs_for(pretrained=False) == 8 + 4
    # Under the published protocol: 100 fine-tune epochs, not 100 frozen + 100 fine-tune.
    paper = _config(tmp_path, methods={"scratch": {}}, tasks=["synthetic-vessel"], budget="paper")
    (job,) = build_plan(paper, get_registry()).jobs
    assert (job.upstream, job.settings.epochs, job.settings.image_size, job.settings.batch_size) == (None, 100, 512, 2)


def test_every_method_and_protocol_of_a_seed_index_labels_the_same_images(tmp_path, monkeypatch):
    config = _config(tmp_path, methods={"scratch": {}, "simclr": {}}, tasks=["synthetic-vessel"], seeds=2)
    plan = build_plan(config, get_registry())
    split_seeds = {
        seed_index: {job.split_seed for job in plan.jobs if job.seed_index == seed_index} for seed_index in (0, 1)
    }
    # scratch's finetune, simclr's frozen and finetune: one labelled subset per seed index, another at the next.
    assert [len(seeds) for seeds in split_seeds.values()] == [1, 1] and split_seeds[0] != split_seeds[1]
    # Jobs that label a random subset are not the jobs that labelled the list's prefix; an ordered task's still are.
    assert {job.spec["labelled_subset"] for job in plan.jobs} == {"seeded permutation"}
    monkeypatch.setattr(type(get_registry().task("synthetic-vessel")), "ordered_split", True)
    ordered = build_plan(config, get_registry())
    assert all("labelled_subset" not in job.spec for job in ordered.jobs)
    assert not {job.id for job in ordered.jobs} & {job.id for job in plan.jobs}


def test_changing_one_pixel_of_a_mask_changes_the_job_id(tmp_path, monkeypatch):
    task = get_registry().task("synthetic-vessel")
    data = task.load(None)
    config = _config(tmp_path, methods={"scratch": {}}, tasks=["synthetic-vessel"])
    before = build_plan(config, get_registry()).jobs[0].id
    masks = data.train.masks.clone()
    masks[0, 0, 0] = ~masks[0, 0, 0]
    changed = SegmentationData(SegmentationSplit(data.train.images, masks, data.train.ids), data.test)
    monkeypatch.setattr(task, "load", lambda data_root: changed)
    assert build_plan(config, get_registry()).jobs[0].id != before


def test_a_named_task_that_cannot_run_is_an_error_not_a_skip(tmp_path):
    with pytest.raises(DataError, match="drive-vessel was asked for but cannot run"):
        build_plan(_config(tmp_path, methods={"scratch": {}}, tasks=["drive-vessel"]), get_registry())
    # Every task, none named: tasks without data are skipped with their reason.
    lines = []
    plan = build_plan(_config(tmp_path, methods={"scratch": {}}, tasks="all"), get_registry(), echo=lines.append)
    assert any(line.startswith("skipping task drive-vessel:") for line in lines)
    assert {job.task.name for job in plan.jobs} >= {"synthetic-vessel", "synthetic-lung"}


def test_a_label_fraction_that_leaves_too_few_images_is_refused_before_any_training(tmp_path):
    # synthetic-vessel has 24 training images: 0.05 keeps one, and LD's split needs one to train, one to validate.
    config = _config(tmp_path, methods={"simclr": {}}, tasks=["synthetic-vessel"], label_fractions=[0.05])
    with pytest.raises(ConfigError, match="keeps 1; at least 2 are needed"):
        build_plan(config, get_registry())
    assert not (tmp_path / "cache" / "pretrain").exists()


def test_a_protocol_that_does_not_serve_a_task_kind_is_left_out_and_refused_when_named(tmp_path):
    values = {"methods": {"scratch": {}}, "tasks": ["synthetic-vessel"]}
    default = resolve_config(values, {"results": str(tmp_path)}, get_registry())  # every default protocol
    assert "linear-probe" in default_protocols() and default.protocols is None
    assert "linear-probe" not in {job.protocol.name for job in build_plan(default, get_registry()).jobs}
    # Named, a protocol that serves none of the run's tasks is a mistake, not an empty plan.
    named = _config(tmp_path, **values, protocols=["finetune", "linear-probe"])
    with pytest.raises(
        ConfigError,
        match=r"protocol linear-probe serves classification tasks, and none of this run's tasks is one: "
        r"synthetic-vessel \(segmentation\)\. Protocols that serve them: .*frozen",
    ):
        build_plan(named, get_registry())


def test_the_demo_run_leaves_out_a_protocol_without_signal_at_its_scale_and_says_how_to_run_it(tmp_path):
    values = {"methods": {"scratch": {}}, "tasks": ["synthetic-vessel"]}

    def protocols(budget: str, **more) -> tuple[set[str], list[str]]:
        said: list[str] = []
        config = resolve_config({**values, "budget": budget, **more}, {"results": str(tmp_path)}, get_registry())
        return {job.protocol.name for job in build_plan(config, get_registry(), echo=said.append).jobs}, said

    demo, said = protocols("demo")
    assert "shape-guided" not in demo and "finetune" in demo
    assert "note: the demo run leaves out shape-guided, whose scores mean nothing at demo scale; -p shape-guided " in (
        "\n".join(said)
    )
    assert "shape-guided" in protocols("paper")[0]
    assert protocols("demo", protocols=["shape-guided"])[0] == {"shape-guided"}


def test_protocol_settings_from_the_config_name_the_variant(tmp_path):
    config = _config(
        tmp_path, methods={"scratch": {}}, tasks=["synthetic-vessel"], protocols={"finetune": {"lr": 0.01}}
    )
    (job,) = build_plan(config, get_registry()).jobs
    assert job.settings.lr == 0.01 and job.spec["protocol"]["label"] == "finetune(lr=0.01)"
    bad = _config(tmp_path, methods={"scratch": {}}, tasks=["synthetic-vessel"], protocols={"finetune": {"lrr": 1}})
    with pytest.raises(ConfigError, match="has no option 'lrr'; its options: image_size"):
        build_plan(bad, get_registry())


def test_a_plan_with_fewer_seeds_than_a_claim_needs_says_so(tmp_path):
    def planned(seeds: int) -> list[str]:
        lines: list[str] = []
        config = _config(tmp_path, methods={"scratch": {}}, tasks=["synthetic-vessel"], seeds=seeds)
        build_plan(config, get_registry(), echo=lines.append)
        return [line for line in lines if "no difference between methods can be claimed" in line]

    (warning,) = planned(2)
    assert "with 2 seed(s)" in warning and "--seeds 3" in warning
    assert planned(3) == []


def test_same_seed_same_numbers_other_seed_other_numbers_and_scratch_learns(tmp_path):
    first = _run(_config(tmp_path / "a", methods={"scratch": {}}, tasks=["synthetic-vessel"], seeds=2))
    second = _run(_config(tmp_path / "b", methods={"scratch": {}}, tasks=["synthetic-vessel"], seeds=1))
    by_seed = {r.seed_index: r for r in first}
    assert _dice(by_seed[0]) == _dice(second[0])
    assert _dice(by_seed[0]) != _dice(by_seed[1])
    # scratch's random encoder is redrawn with each seed: the weights' digest says so (a checkpoint's would not).
    assert by_seed[0].encoder_digest == second[0].encoder_digest != by_seed[1].encoder_digest
    # All-foreground prediction on the same test masks: Dice = 2|y| / (|y| + |image|).
    masks = get_registry().task("synthetic-vessel").load(None).test.masks.float()
    all_foreground = (2 * masks.sum((1, 2)) / (masks.sum((1, 2)) + masks[0].numel())).mean().item()
    assert np.mean(_dice(second[0])) > all_foreground + 0.25, (np.mean(_dice(second[0])), all_foreground)


def test_result_record_carries_what_the_leaderboard_and_users_need(tmp_path):
    (result,) = _run(_config(tmp_path, methods={"scratch": {}}, tasks=["synthetic-lung"]))
    assert result.schema_version == SCHEMA_VERSION and result.variant == "scratch" and result.budget == "demo"
    assert (result.protocol.name, result.protocol.label, result.protocol.continued_from) == ("finetune",) * 2 + (None,)
    assert result.pretrained is False and result.pool is None and result.task_kind == "segmentation"
    assert set(result.metrics) == {"dice", "iou"} and result.headline_metric == "dice"
    assert len(_dice(result)) == len(result.metrics["dice"].ids) == 8
    assert result.selection.val_loss_name == "soft_dice_loss" and 1 <= result.selection.epoch <= 12
    assert result.data_fingerprint == result.spec["data"] and len(result.data_fingerprint) == 32
    assert result.compute.pretrain_seconds is None  # scratch does not pretrain
    assert result.compute.protocol_seconds > 0
    assert result.compute.peak_memory_mb is None or result.compute.peak_memory_mb > 50
    assert result.versions["torch"] == torch.__version__
    assert "ssl-bench==" in result.versions["plugins"][0]


def test_the_frozen_model_is_kept_and_finetune_never_retrains_it(tmp_path):
    config = _config(tmp_path, methods={"simclr": {}}, tasks=["synthetic-vessel"])
    results = _by_protocol(_run(config))
    frozen, finetune = results["frozen"], results["finetune"]
    assert finetune.protocol.continued_from == frozen.job_id
    assert selected_model_path(tmp_path, frozen.job_id).exists()
    assert not selected_model_path(tmp_path, finetune.job_id).exists()
    # Only the finetune record gone: the rerun computes finetune alone, from the kept frozen model.
    (tmp_path / "runs" / finetune.job_id / "result.json").unlink()
    (rerun,) = _run(config)
    assert rerun.job_id == finetune.job_id and _dice(rerun) == _dice(finetune)


def test_adding_a_protocol_reruns_no_cached_job_of_another(tmp_path):
    base = _config(tmp_path, methods={"scratch": {}}, tasks=["synthetic-vessel"])
    (finetune,) = _run(base)
    written = (tmp_path / "runs" / finetune.job_id / "result.json").stat().st_mtime_ns
    more = _run(dataclasses.replace(base, protocols={"finetune": {}, "frozen": {}}))
    assert [r.protocol.name for r in more] == ["frozen"]
    assert (tmp_path / "runs" / finetune.job_id / "result.json").stat().st_mtime_ns == written


def test_a_truncated_result_is_not_done_and_is_recomputed(tmp_path):
    config = _config(tmp_path, methods={"scratch": {}}, tasks=["synthetic-lung"])
    (result,) = _run(config)
    path = tmp_path / "runs" / result.job_id / "result.json"
    path.write_text(path.read_text()[:100])
    (again,) = _run(config)
    assert again.job_id == result.job_id and _dice(again) == _dice(result)


def test_a_timm_encoder_runs_and_names_the_variant(tmp_path):
    (result,) = _run(
        _config(tmp_path, methods={"scratch": {}}, tasks=["synthetic-lung"], encoder="mobilenetv3_small_050")
    )
    assert result.variant == "scratch@mobilenetv3_small_050" and result.encoder == "mobilenetv3_small_050"
    assert np.mean(_dice(result)) > 0.5
    with pytest.raises(ConfigError, match="Did you mean resnet18"):
        _config(tmp_path, methods={"scratch": {}}, tasks=["synthetic-lung"], encoder="resnet1")


def test_pretraining_is_cached_and_shared(tmp_path):
    config = _config(
        tmp_path, methods={"simclr": {}}, tasks=["synthetic-vessel"], label_fractions=[1.0, 0.5], protocols=["frozen"]
    )
    results = _run(config)
    folders = list((tmp_path / "cache" / "pretrain").iterdir())
    assert len(results) == 2 and len(folders) == 1
    record = json.loads((folders[0] / "pretraining.json").read_text())
    assert record["source_images"] == 2 * 10 * 16 and record["resumed_from_step"] == 0
    assert results[0].compute.pretrain_images_per_second == record["images_per_second"]
    assert results[0].compute.pretrain_torch_threads == record["torch_threads"] == torch.get_num_threads()
    assert results[0].compute.torch_threads == torch.get_num_threads()
    assert not (folders[0] / "state.pt").exists()
    # Nothing left to do: a second run computes nothing, and "never" refuses to touch existing results.
    assert _run(config) == []
    with pytest.raises(ConfigError, match="already exist"):
        _run(dataclasses.replace(config, overwrite="never"))
    # A record that does not read back marks no finished pretraining: status counts it as left, not a traceback.
    (folders[0] / "pretraining.json").write_text('{"seconds": "garbage"}')
    plan = build_plan(config, get_registry())
    assert finished_pretraining(folders[0]) is None and pretrainings_left(tmp_path, plan) == (1, None)


def _state_position(path: Path) -> dict | None:
    try:
        return torch.load(path, weights_only=False)["position"]
    except Exception:  # not written yet, or being replaced right now
        return None


@pytest.mark.slow
def test_sigkill_inside_a_pretraining_epoch_resumes_to_identical_results(tmp_path):
    command = [sys.executable, "-m", "ssl_bench", "run", "-m", "simclr", "-t", "synthetic-vessel", "--no-progress"]
    command += ["-p", "finetune"]
    env = {**os.environ, "SSL_BENCH_CHECKPOINT_SECONDS": "0"}
    killed = tmp_path / "killed"
    process = subprocess.Popen([*command, "--results", str(killed)], env=env)
    deadline = time.monotonic() + 300
    state_files = killed / "cache" / "pretrain"
    while time.monotonic() < deadline:
        states = list(state_files.glob("*/state.pt"))
        # Paused while its checkpoint is read, so that a busy machine cannot let it run past the window unseen.
        process.send_signal(signal.SIGSTOP)
        position = _state_position(states[0]) if states else None
        if position and position["epoch"] == 0 and position["step"] >= 3:
            break
        process.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    else:
        process.kill()
        pytest.fail("pretraining never reached step 3 of its first epoch")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list(killed.glob("runs/*/result.json"))

    subprocess.run([*command, "--results", str(killed)], env=env, check=True)
    subprocess.run([*command, "--results", str(tmp_path / "straight")], env=env, check=True)
    resumed = sorted((read_record(p) for p in killed.glob("runs/*/result.json")), key=lambda r: r.job_id)
    straight = sorted(
        (read_record(p) for p in (tmp_path / "straight").glob("runs/*/result.json")), key=lambda r: r.job_id
    )
    assert [r.job_id for r in resumed] == [r.job_id for r in straight] and len(resumed) == 2
    assert [r.metrics for r in resumed] == [r.metrics for r in straight]
    (record,) = [json.loads(p.read_text()) for p in killed.glob("cache/pretrain/*/pretraining.json")]
    assert record["resumed_from_step"] >= 3  # the finished steps were not redone
    assert record["source_images"] == 2 * 10 * 16


def test_default_pool_never_holds_a_test_image(tmp_path):
    from ssl_bench.pools import _default_images

    registry = get_registry()
    vessel = registry.task("synthetic-vessel").load(None)
    images = _default_images(registry, "synthetic-fundus", None)
    test_images = {bytes(t.numpy()) for t in vessel.test.images}
    # The built-in phantoms resized to the pool's size: none of them is a test image, all train ones are in.
    assert len(images) == len(vessel.train)
    assert not {bytes(i.numpy()) for i in images} & test_images


def test_prepare_pool_decodes_once_and_holds_out_one_in_twenty(tmp_path):
    calls = []

    def load():
        calls.append(1)
        return torch.arange(40 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(40, 3, 4, 4)

    source = PoolSource("toy", "toy", 3, "toy-key", load)
    first, second = prepare_pool(source, tmp_path), prepare_pool(source, tmp_path)
    assert len(calls) == 1 and isinstance(second.images, np.memmap)
    assert first.fingerprint == second.fingerprint and len(first.fingerprint) == 64
    assert list(first.val_index) == [19, 39] and len(first.train_index) == 38


def test_peak_memory_sees_a_large_allocation():
    with PeakMemory(torch.device("cpu")) as small:
        torch.zeros(1)
    with PeakMemory(torch.device("cpu")) as large:
        block = torch.ones(300 * 2**20 // 4)  # 300 MB
        del block
    if small.peak_mb is None:
        pytest.skip("this kernel cannot reset the peak RSS (/proc/self/clear_refs)")
    assert large.peak_mb - small.peak_mb > 250


def test_a_configured_folder_is_the_pool_of_its_modality(tmp_path):
    from PIL import Image

    from ssl_bench.errors import DataError
    from ssl_bench.pools import POOL_IMAGE_SIZE, resolve_pool

    folder = tmp_path / "eyepacs"
    (folder / "nested").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "a.png")
    Image.new("RGB", (30, 40), (10, 200, 10)).save(folder / "nested" / "b.JPG")
    (folder / "README.txt").write_text("not an image")
    source = resolve_pool("synthetic-fundus", get_registry(), None, {"synthetic-fundus": str(folder)})
    images = source.load()
    assert source.id == f"folder:{folder}" and source.channels == 3
    assert images.shape == (2, 3, POOL_IMAGE_SIZE, POOL_IMAGE_SIZE)
    assert images[0, :, 256, 256].tolist() == [200, 10, 10]  # a flat colour survives the resize exactly
    (folder / "a.png").unlink()
    (folder / "nested" / "b.JPG").unlink()
    with pytest.raises(DataError, match="holds no images"):
        source.load()


def test_a_truncated_pool_cache_is_decoded_again(tmp_path):
    def load():
        return torch.arange(40 * 3 * 4 * 4).remainder(256).to(torch.uint8).reshape(40, 3, 4, 4)

    source = PoolSource("toy", "toy", 3, "toy-key", load)
    first = prepare_pool(source, tmp_path)
    (array_path,) = tmp_path.glob("*.npy")
    array_path.write_bytes(array_path.read_bytes()[:200])  # a copy cut short
    again = prepare_pool(source, tmp_path)
    assert again.fingerprint == first.fingerprint and np.array_equal(np.asarray(again.images), load().numpy())
