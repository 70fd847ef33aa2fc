# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""ROS 2 adapters. Only node.py imports rclpy; conversions.py works on any message classes."""
