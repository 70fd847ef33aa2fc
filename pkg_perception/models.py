# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Where the shipped model lives: share/pkg_perception/models when installed, else the repo."""

from __future__ import annotations

from pathlib import Path

MODEL_FILE = 'parcelnet.onnx'
WEIGHTS_FILE = 'parcelnet.pt'  # PyTorch weights of the same model, for fine-tuning


def models_dir() -> Path:
    """The installed share directory when ament knows the package, else the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        shared = Path(get_package_share_directory('pkg_perception')) / 'models'
        if (shared / MODEL_FILE).exists():
            return shared
    except Exception:
        pass
    return Path(__file__).resolve().parents[1] / 'models'


def default_model_path() -> Path:
    return models_dir() / MODEL_FILE


def default_weights_path() -> Path:
    return models_dir() / WEIGHTS_FILE
