#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job on the built-in default: the
# simulated conveyor camera recorded to out/demo/conveyor.bag, with a contact sheet of what
# it recorded in out/demo/preview.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/pkg-perception simulate --out out/demo/conveyor.bag --frames 150 --seed 0 \
  --scene mixed --preview out/demo/preview.png --overwrite "$@"
echo "open out/demo/preview.png to see the recording; play it with: ros2 bag play out/demo/conveyor.bag"
