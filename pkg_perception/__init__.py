# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""RGB-D parcel perception for robotic picking off a conveyor."""

__version__ = '0.1.0'
