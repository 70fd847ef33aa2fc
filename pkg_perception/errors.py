# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The package's own exceptions: each message names the bad value and how to fix it."""


class PerceptionError(Exception):
    """Base class: catch this to handle every error the package raises on purpose."""


class InputError(PerceptionError, ValueError):
    """An array, message or argument that does not fit (shape, dtype, encoding, range)."""


class ConfigError(PerceptionError, ValueError):
    """A setting is missing, of the wrong type or out of range."""


class BagError(PerceptionError):
    """A rosbag2 file is missing, corrupt, lacks a topic, or would be overwritten."""


class ModelError(PerceptionError):
    """A model file is missing, corrupt, or does not match what the runtime expects."""
