"""musubi-tuner's own wan_train_network.py, wrapped, on a tiny Wan 2.1 model: an image dataset and a
video dataset mixed in one config.

The musubi-tuner environment is the one ``kohya-multiplier configure --musubi PY`` remembered (the
README's developer set-up makes it); without it every test here is skipped with the reason. The
tiny DiT, the videos and the caches come from ``tiny_wan.py`` (musubi's own cache writers, random
tensors in place of the VAE and T5). What musubi hard-codes that had to be shrunk for that, in
``tiny_hook/km_tiny_wan.py``: WAN_CONFIGS (t2v-1.3B's 1536 channels, 30 layers, 12 heads, text
length 512) to 32 channels, 2 layers, 2 heads, text length 16, and WanModel's text_dim default
(4096) to 32; the VAE and T5 are never built. ``wan/modules/t5.py`` asks CUDA for a default
argument's value at import, which a CPU-only torch refuses: the hook answers 0 while it loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness import canonical, printed_int, read_records, safetensors_header, safetensors_tensors
from musubi_harness import INTEGRATION_DIR, PYTHON, SEED, needs_musubi, run as run_in_musubi, train as train_in_musubi, plan as dry_run
from pngs import write_images

from kohya_multiplier.checkouts import musubi as installs

pytestmark = needs_musubi
TINY = "KOHYA_MULTIPLIER_TINY_WAN"
EPOCHS = 2


def run(args: list[str], cwd: Path, log: Path):
    return run_in_musubi(args, cwd, log, TINY)


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    """The tiny DiT, and the media of both datasets (their caches are made per config)."""
    root = tmp_path_factory.mktemp("musubi_wan")
    built = run([str(INTEGRATION_DIR / "tiny_wan.py"), str(root / "model")], root, root / "model.log")
    assert built.returncode == 0, built.stdout + built.stderr
    write_images(root / "images", 4, (32, 32), seed=1, caption="a square", stem="sq")
    write_images(root / "images", 2, (64, 16), seed=9, caption="a wide one", stem="wide")
    made = run([str(INTEGRATION_DIR / "tiny_wan.py"), "--videos", str(root / "videos"), "--count", "3", "--frames", "9",
                "--caption", "a moving thing"], root, root / "videos.log")
    assert made.returncode == 0, made.stdout + made.stderr
    plain = write_config(root, "plain", "", "")  # the caches, of what every config here names
    cached = run([str(INTEGRATION_DIR / "tiny_wan.py"), "--caches", str(plain)], root, root / "caches.log")
    assert cached.returncode == 0, cached.stdout + cached.stderr
    return root


def write_config(root: Path, name: str, image_rate: str, video_rate: str) -> Path:
    """Both datasets with their caches; a rate line is e.g. "multiplier = 1.5" or "" (musubi's own)."""
    config = root / f"{name}.toml"
    config.write_text(f"""
[general]
resolution = [32, 32]
caption_extension = ".txt"
enable_bucket = true

[[datasets]]
image_directory = "{root / 'images'}"
cache_directory = "{root / 'cache_images'}"
batch_size = 2
{image_rate}

[[datasets]]
video_directory = "{root / 'videos'}"
cache_directory = "{root / 'cache_videos'}"
target_frames = [1, 5]
frame_extraction = "head"
batch_size = 1
{video_rate}
""")
    return config


def train(root: Path, config: Path, out: str, extra: list[str], **options):
    args = ["--task", "t2v-1.3B", "--dit", str(root / "model" / "wan_dit.safetensors"), "--dataset_config", str(config),
            "--network_module", "networks.lora_wan", "--max_train_epochs", str(EPOCHS), *extra]
    return train_in_musubi(root / out, "wan_train_network", args, TINY, **options)


def plan(config: Path, schedule: Path, *extra: str, **options) -> tuple[list[dict], str]:
    return dry_run(config, schedule, "wan", *extra, **options)


@pytest.mark.parametrize("workers", [0, 2], ids=["0 workers", "2 persistent workers"])
def test_wan_lora_trains_exactly_the_plan(wan, workers):
    config = write_config(wan, "balanced", "multiplier = 1.5", "multiplier = 0.5")
    schedule = wan / f"trained_{workers}.jsonl"
    output, lora = train(wan, config, f"balanced_{workers}", ["--multiplier_schedule", str(schedule)], workers=workers)
    planned, _ = plan(config, wan / f"planned_{workers}.jsonl", "--epochs", str(EPOCHS))
    trained = read_records(schedule)
    assert canonical(trained) == canonical(planned)
    images = [r for r in trained if r["dataset"] == 0]
    clips = [r for r in trained if r["dataset"] == 1]
    assert sum(len(r["images"]) for r in images) == 9 * EPOCHS  # 1.5 x 6 images
    assert sum(len(r["images"]) for r in clips) == 3 * EPOCHS  # 0.5 x 6 clips
    assert {len(r["resolution"]) for r in clips} == {3}  # a clip's bucket holds its frames
    assert len({item for r in clips for item in r["images"]}) == 6  # rotation: every clip of every video in 2 epochs
    assert f"seed {SEED}; balance of epochs 1-{EPOCHS}:" in output and "expected/epoch" in output  # plan's table
    length = len(planned) // EPOCHS
    assert printed_int(output, "num batches per epoch") == length
    assert printed_int(output, "total optimization steps") == EPOCHS * length
    metadata = safetensors_header(lora)["__metadata__"]
    assert int(metadata["ss_num_batches_per_epoch"]) == length
    datasets = json.loads(metadata["ss_datasets"])
    assert [d["kohya_multiplier"]["multiplier"] for d in datasets] == [1.5, 0.5]
    assert all(d["kohya_multiplier"]["planner_version"] >= 1 for d in datasets)
    assert any(any(b != 0 for b in t) for name, t in safetensors_tensors(lora).items() if "lora_up" in name)


def test_spawned_workers_serve_the_same_plan(wan):
    """DataLoader workers started by spawn, as on Windows and macOS (the test hook makes spawn the
    default): each unpickles its dataset with the plan and must serve the same epochs."""
    config = write_config(wan, "spawned", "multiplier = 1.5", "multiplier = 0.5")
    schedule = wan / "trained_spawned.jsonl"
    train(wan, config, "spawned", ["--multiplier_schedule", str(schedule)], workers=2, KOHYA_MULTIPLIER_TEST_SPAWN="1")
    planned, _ = plan(config, wan / "planned_spawned.jsonl", "--epochs", str(EPOCHS))
    assert canonical(read_records(schedule)) == canonical(planned)


def test_two_ranks_without_a_seed_train_the_plan_of_seed_0_between_them(wan):
    """torchrun starts two ranks (gloo on CPU; the test hook gives accelerate its GPU rule of not
    wrapping the frozen DiT in DDP). Without --seed musubi draws a seed per rank; the plan must
    still be the same on both (seed 0), each rank taking its share of every epoch."""
    torchrun = PYTHON.with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"no torchrun beside {PYTHON}")
    config = write_config(wan, "ranks", "multiplier = 1.5", "multiplier = 0.5")
    schedule = wan / "trained_ranks.jsonl"
    launcher = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 400)]
    output, _ = train(wan, config, "ranks", ["--multiplier_schedule", str(schedule)], seed=None, launcher=launcher,
                      KOHYA_MULTIPLIER_TEST_CPU_RANKS="1")
    assert output.count("(no --seed given)") == 2
    planned, _ = plan(config, wan / "planned_ranks.jsonl", "--epochs", str(EPOCHS), seed=0)
    trained = read_records(schedule)
    assert canonical(trained) == canonical(planned)  # 8 batches an epoch: 4 on each rank, none twice
    assert printed_int(output, "num batches per epoch") == len(planned) // EPOCHS // 2


@pytest.mark.parametrize("hook", ["NetworkTrainer._build_dataset", "generate_dataset_group_by_blueprint",
                                  "ImageDataset.prepare_for_training"])
def test_a_hook_that_misses_stops_the_run_before_the_model_loads(wan, hook):
    """A hook that musubi does not call (as after a refactor of musubi-tuner): one line, exit 2."""
    config = write_config(wan, f"missed_{hook}", "multiplier = 1.5", "multiplier = 0.5")
    output = wan / f"missed_{hook}"
    output.mkdir()
    args = ["-m", "kohya_multiplier", "musubi", "wan_train_network", "--task", "t2v-1.3B",
            "--dit", str(wan / "model" / "wan_dit.safetensors"), "--dataset_config", str(config),
            "--network_module", "networks.lora_wan", "--max_train_epochs", "1", "--output_dir", str(output),
            "--output_name", "out", "--seed", "1"]
    done = run_in_musubi(args, output, output / "train.log", TINY, KOHYA_MULTIPLIER_TEST_MOVE=f"musubi:{hook}")
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "did not take effect" in errors[0] and "stopped before training" in errors[0]
    assert "Traceback" not in done.stderr
    assert "Loading DiT model" not in done.stdout + done.stderr
    assert not (output / "out.safetensors").exists()


def test_a_config_without_multipliers_trains_as_stock_musubi_bit_for_bit(wan):
    config = write_config(wan, "stock", "num_repeats = 2", "")
    _, stock = train(wan, config, "stock_musubi", [], stock=True)
    _, wrapped = train(wan, config, "stock_wrapped", [])
    assert safetensors_tensors(wrapped) == safetensors_tensors(stock)


def test_an_epoch_offset_continues_the_plan_where_a_resumed_run_left_it(wan):
    config = write_config(wan, "continued", "multiplier = 0.5", "multiplier = 1.5")
    schedule = wan / "continued.jsonl"
    output, _ = train(wan, config, "continued", ["--multiplier_schedule", str(schedule), "--multiplier_epoch_offset", "3"])
    planned, _ = plan(config, wan / "planned_from_4.jsonl", "--from-epoch", "4", "--epochs", str(EPOCHS))
    trained = read_records(schedule)
    assert {r["epoch"] for r in trained} == {4, 5}
    assert canonical(trained) == canonical(planned)


def test_a_loss_weight_scales_each_batch_loss(wan):
    config = write_config(wan, "silenced", "multiplier = 1.5\nloss_weight = 0", "multiplier = 0.5\nloss_weight = 0")
    _, lora = train(wan, config, "silenced", [])
    ups = [t for name, t in safetensors_tensors(lora).items() if "lora_up" in name]
    assert ups and all(not any(t) for t in ups)  # a zero weight: no gradient reached the LoRA's up weights


def test_the_configured_musubi_is_the_tested_revision_and_lists_its_scripts(wan):
    """The fingerprint of every hooked function matches v0.3.4's, and the suite's scripts say so."""
    done = run_in_musubi(["-m", "kohya_multiplier", "scripts", "--trainer", "musubi"], wan, wan / "scripts.log", TINY)
    assert done.returncode == 0, done.stderr
    assert "revision v0.3.4 (30c658c)" in done.stdout
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.split()[:1] and line.split()[0].endswith("_train_network")}
    for script in installs.TRAINED_BY_THE_SUITE:
        assert rows[script].split()[1:3] == ["yes", "yes"]
    assert "no (wrapped only)" in rows["hv_train_network"]


def test_a_caching_script_reads_a_config_with_multipliers_through_the_wrapper(wan):
    """musubi's schema rejects our keys; its caching scripts, wrapped, get past the config and stop
    only where this test wants them to: at the VAE, which it does not give."""
    config = write_config(wan, "to_cache", "multiplier = 1.5", "loss_weight = 0.5")
    args = ["--dataset_config", str(config), "--vae", str(wan / "no_vae.safetensors"), "--device", "cpu"]
    stock = run_in_musubi(["-m", "musubi_tuner.wan_cache_latents", *args], wan, wan / "cache_stock.log", TINY)
    assert stock.returncode != 0 and "extra keys not allowed" in stock.stderr
    wrapped = run_in_musubi(["-m", "kohya_multiplier", "musubi", "wan_cache_latents", *args], wan, wan / "cache_wrapped.log", TINY)
    assert wrapped.returncode != 0 and "extra keys not allowed" not in wrapped.stderr
    assert "no_vae.safetensors" in wrapped.stderr.strip().splitlines()[-1]
