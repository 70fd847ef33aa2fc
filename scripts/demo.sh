#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job on the built-in default:
# simulate a conveyor camera bag, replay it through the pipeline the ROS node runs (the
# shipped model), evaluate against the simulator's ground truth, and point at the report.
# Extra arguments go to the replay, e.g. `bash scripts/demo.sh --segmenter geometric`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
pkg=.venv/bin/pkg-perception
$pkg simulate --out out/demo/conveyor.bag --frames 150 --seed 0 --scene mixed \
  --preview out/demo/preview.png --overwrite
# Without models/parcelnet.onnx the replay falls back to the geometric segmenter, and says so.
status=0
$pkg replay out/demo/conveyor.bag --out out/demo/replay --overwrite \
  --set segmentation.fallback_to_geometric=true "$@" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then exit "$status"; fi
$pkg evaluate out/demo/replay
echo
echo "report: $(pwd)/out/demo/replay/report.html"
echo "play the replay with its outputs: ros2 bag play out/demo/replay/replay.bag (RViz: config/perception.rviz)"
