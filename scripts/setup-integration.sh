#!/usr/bin/env bash
# Set up the integration environment for one sd-scripts or musubi-tuner checkout, on a fresh machine:
#   scripts/setup-integration.sh SD_SCRIPTS_DIR [--label NAME] [--python PYTHON]
#   scripts/setup-integration.sh MUSUBI_TUNER_DIR [--python PYTHON]
# 1. a venv at SD_SCRIPTS_DIR/venv (sd-scripts' own convention), pinned CPU torch first;
# 2. sd-scripts' requirements (minus bitsandbytes, CUDA only) with torch held at the pin;
# 3. this project with its test extras, editable, in the same venv (so `configure`, pytest and
#    the training subprocesses all use one Python);
# 4. torchvision and open_clip_torch without dependencies (sd-scripts imports torchvision
#    without listing it; open_clip's wheel carries the CLIP BPE merges the tiny models need);
# 5. `kohya-multiplier configure` registering the checkout (and its Python) for the tests.
# For a musubi-tuner checkout (it has src/musubi_tuner): the venv at MUSUBI_TUNER_DIR/venv with the
# pinned torch, musubi-tuner itself (-e) and torchvision with torch held at the pin, this project
# with its test extras, then `kohya-multiplier configure --musubi <venv>/bin/python`.
# Idempotent: re-running it on a set-up checkout only re-checks the installs.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="" label="" python="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --label) label="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) if [ -z "$dir" ]; then dir="$1"; shift; else echo "setup-integration: unexpected argument $1" >&2; exit 2; fi ;;
  esac
done
[ -n "$dir" ] || { echo "usage: scripts/setup-integration.sh SD_SCRIPTS_DIR [--label NAME] [--python PYTHON]" >&2; exit 2; }
dir="$(cd "$dir" && pwd)"
cd "$here"  # not inside the checkout: musubi-tuner's .python-version would pick the Python there
torch_pin="${KOHYA_MULTIPLIER_TORCH:-torch==2.13.0}"
if [ -d "$dir/src/musubi_tuner" ]; then
  venv="$dir/venv"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  pip="$venv/bin/python -m pip --disable-pip-version-check"
  $pip install --quiet --upgrade pip
  $pip install --quiet "$torch_pin"
  constraints="$(mktemp)"
  trap 'rm -f "$constraints"' EXIT
  "$venv/bin/python" -c 'import importlib.metadata as m; print("torch==" + m.version("torch").split("+")[0])' > "$constraints"
  $pip install --quiet -c "$constraints" -e "$dir" torchvision
  $pip install --quiet -c "$constraints" -e "$here[test]"
  "$venv/bin/kohya-multiplier" configure --musubi "$venv/bin/python"
  echo "setup-integration: $dir ready. Its tests, from this repository:"
  echo "  cd $here && $venv/bin/python -m pytest tests/integration -k musubi"
  exit 0
fi
[ -f "$dir/library/config_util.py" ] || { echo "setup-integration: $dir is neither an sd-scripts checkout (no library/config_util.py) nor a musubi-tuner one (no src/musubi_tuner)" >&2; exit 2; }
venv="$dir/venv"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip="$venv/bin/python -m pip --disable-pip-version-check"
$pip install --quiet --upgrade pip
$pip install --quiet "$torch_pin"
req="$(mktemp)"; constraints="$(mktemp)"
trap 'rm -f "$req" "$constraints"' EXIT
grep -v -i -E '^(bitsandbytes|-e )' "$dir/requirements.txt" > "$req"
# the installed torch's version from its metadata: importing torch before NumPy is installed warns
"$venv/bin/python" -c 'import importlib.metadata as m; print("torch==" + m.version("torch").split("+")[0])' > "$constraints"
# opencv before 4.9 is built against numpy 1
if grep -q -E '^opencv-python==4\.[0-8]\.' "$req"; then echo 'numpy<2' >> "$constraints"; fi
$pip install --quiet -r "$req" -c "$constraints"
$pip install --quiet --no-deps -e "$dir"
$pip install --quiet -c "$constraints" -e "$here[test]"
$pip install --quiet --no-deps torchvision open_clip_torch
args=(configure --sd-scripts "$dir" --python "$venv/bin/python")
[ -n "$label" ] && args+=(--label "$label")
"$venv/bin/kohya-multiplier" "${args[@]}"
# the suite names a checkout's tests after its tested revision, else after its label
name="$("$venv/bin/python" -c 'import sys; from kohya_multiplier.checkouts import locate; r = locate.detect_revision(sys.argv[1]); print(r.name.split()[0] if r.tested else sys.argv[2])' "$dir" "${label:-default}")"
echo "setup-integration: $dir ready. Run the tests from this repository (not from the sd-scripts checkout, whose own tests pytest would collect):"
echo "  everything, every configured checkout:  cd $here && $venv/bin/python -m pytest"
echo "  this checkout's integration tests only:  cd $here && $venv/bin/python -m pytest tests/integration -k '$name'"
