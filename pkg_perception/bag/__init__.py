# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""rosbag2 files without ROS: the message types, a writer for simulated frames, a frame reader."""
