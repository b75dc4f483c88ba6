"""Issue 4: a patched checkout honours `multiplier` when the training script is run directly.

For every configured checkout (main and v0.9.1), the test makes a `git worktree` of it, shows that
the unpatched script rejects `multiplier`, patches it with `kohya-multiplier patch`, trains 2
epochs by running the unmodified scripts themselves (`python train_db.py` and `accelerate launch
train_network.py`, the kohya_ss GUI's way), compares what was trained with `kohya-multiplier plan`,
unpatches, and checks that `git status` is clean.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness import LORA_ARGS, REPO_ROOT, canonical, dry_run, model_args, per_epoch, read_records, write_config, write_images_tree

pytestmark = pytest.mark.integration

EPOCHS = 2
SEED = 7


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=check, timeout=300)


def kohya_multiplier(sd, *args: str) -> subprocess.CompletedProcess:
    """Our CLI from this repository, in the checkout's Python (as a user who installed it there)."""
    return subprocess.run(
        [sd.python, "-m", "kohya_multiplier", *args], capture_output=True, text=True, env=sd.env(), timeout=300
    )


@pytest.fixture(scope="module")
def worktree(sd, tmp_path_factory):
    if not (Path(sd.root) / ".git").exists():
        pytest.skip(f"{sd.root} is not a git checkout: cannot make a worktree to patch")
    path = tmp_path_factory.mktemp(f"patched-{sd.label}") / "sd-scripts"
    git(sd.root, "worktree", "add", "--detach", "--no-checkout", str(path), "HEAD")
    try:
        sparse = git(sd.root, "sparse-checkout", "list", check=False)
        if sparse.returncode == 0 and sparse.stdout.strip():
            # the same exclusions as the original (blobs some mirrors lack)
            git(path, "sparse-checkout", "set", "--no-cone", *sparse.stdout.split())
        git(path, "checkout", "--quiet")
        assert _status(path) == ""
        yield path
    finally:
        git(sd.root, "worktree", "remove", "--force", str(path), check=False)


def _status(path: Path) -> str:
    return git(path, "status", "--porcelain", "--untracked-files=no").stdout.strip()


def run_script(sd, worktree: Path, script: str, args: list[str], out: Path, *, accelerate: bool = False):
    out.mkdir(parents=True, exist_ok=True)
    head = [sd.python]
    if accelerate:
        head += ["-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                 "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1"]
    command = [*head, str(worktree / script), *model_args(sd), "--output_dir", str(out), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=sd.env(), cwd=str(out), timeout=600)
    output = result.stdout + "\n" + result.stderr
    (out / "train.log").write_text(" ".join(command) + "\n\n" + output)
    return result.returncode, output


def test_patch_train_compare_unpatch(sd, worktree, tmp_path_factory):
    data = tmp_path_factory.mktemp(f"patched-data-{sd.label}")
    write_images_tree(data)
    config = write_config(data, batch_size=2)
    common = ["--dataset_config", str(config), "--seed", str(SEED), "--max_train_epochs", str(EPOCHS)]

    # Unpatched: sd-scripts' schema rejects the key, as it does today.
    code, output = run_script(sd, worktree, "train_db.py", common, data / "unpatched")
    assert code != 0
    assert "extra keys not allowed" in output and "multiplier" in output

    patched = kohya_multiplier(sd, "patch", str(worktree))
    assert patched.returncode == 0, patched.stderr
    assert "patched" in patched.stdout
    status = kohya_multiplier(sd, "status", str(worktree))
    assert "patch:     patched" in status.stdout
    assert "loads:     kohya-multiplier" in status.stdout and str(REPO_ROOT) in status.stdout

    planned, _ = dry_run([str(config), "--seed", str(SEED), "--epochs", str(EPOCHS)], data / "dry-run.jsonl")
    length = len(planned) // EPOCHS

    # DreamBooth, the script run directly with python.
    db_schedule = data / "db" / "schedule.jsonl"
    code, output = run_script(sd, worktree, "train_db.py", [*common, "--multiplier_schedule", str(db_schedule)], data / "db")
    assert code == 0, output[-4000:]
    assert canonical(read_records(db_schedule)) == canonical(planned)
    assert "kohya-multiplier: seed 7" in output  # the balance table is printed at start

    # LoRA, through accelerate launch as the GUI runs it.
    lora_schedule = data / "lora" / "schedule.jsonl"
    code, output = run_script(
        sd, worktree, "train_network.py", [*common, *LORA_ARGS, "--multiplier_schedule", str(lora_schedule)], data / "lora",
        accelerate=True,
    )
    assert code == 0, output[-4000:]
    records = read_records(lora_schedule)
    assert per_epoch(records) == {e: length for e in range(1, EPOCHS + 1)}
    assert canonical(records) == canonical(planned)

    unpatched = kohya_multiplier(sd, "unpatch", str(worktree))
    assert unpatched.returncode == 0, unpatched.stderr
    assert _status(worktree) == ""
    assert "patch:     unpatched" in kohya_multiplier(sd, "status", str(worktree)).stdout
