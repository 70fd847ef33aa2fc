# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The parcel classes, shared by the simulator, the model, the bags and the planner."""

from __future__ import annotations

from enum import IntEnum


class ParcelClass(IntEnum):
    """Parcel class ids; 0 is reserved for background in label images and model outputs."""

    BOX = 1
    POLYBAG = 2
    MAILER = 3
    ENVELOPE = 4

    @property
    def label(self) -> str:
        """Lower-case name used in messages, files and reports."""
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> ParcelClass:
        """Inverse of `label`; raises ValueError naming the known labels."""
        try:
            return cls[label.upper()]
        except KeyError:
            known = ', '.join(c.label for c in cls)
            raise ValueError(f'unknown parcel class {label!r}; known: {known}') from None
