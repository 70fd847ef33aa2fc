#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian/Ubuntu machine with Python 3.10+:
# the system library open3d loads (libusb-1.0), a virtual environment in .venv, the Python
# packages and the package itself (editable). Safe to run again; it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || ! "$python" -c 'import ensurepip' 2>/dev/null; then
  echo "[setup] installing libusb-1.0-0 (open3d needs it to import) and python3-venv"
  sudo_cmd=""
  if [ "$(id -u)" != "0" ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq libusb-1.0-0 python3-venv
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
# On the Python the project is tested with, install the exact versions it was tested with.
pyver="$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
pins=()
if [ -f "constraints-py$pyver.txt" ]; then pins=(-c "constraints-py$pyver.txt"); fi
stamp=.venv/.requirements-stamp
want="$(cat requirements*.txt setup.py ${pins[1]+"${pins[1]}"} | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # The packages take about 3 GB (torch and open3d most of it): say so rather than let pip
  # stop half way with "No space left on device".
  free_mb=$(df -Pm . | awk 'NR==2 {print $4}')
  if [ "${free_mb:-0}" -lt 3500 ]; then
    echo "[setup] error: ${free_mb} MB free on $(df -P . | awk 'NR==2 {print $6}'); the Python" \
      "packages need about 3500 MB. Free some disk space and run this again." >&2
    exit 1
  fi
  echo "[setup] installing Python packages"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: the pinned version resolves to the CPU wheel; a loose spec would
  # pull several GB of CUDA packages.
  .venv/bin/python -m pip install -q ${pins[@]+"${pins[@]}"} -r requirements-train.txt
  .venv/bin/python -m pip install -q ${pins[@]+"${pins[@]}"} -r requirements-dev.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" >"$stamp"
fi
echo "[setup] ready: $(.venv/bin/python --version), .venv/bin/pkg-perception"
