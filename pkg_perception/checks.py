# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""One place that checks arrays at the boundary of the core, with messages that say the fix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pkg_perception.errors import InputError


def check_array(
    name: str,
    array: object,
    *,
    shape: Sequence[int | None],
    dtypes: Sequence[type[np.generic]] | None = None,
) -> npt.NDArray[np.generic]:
    """Return `array` as ndarray after checking its shape (None = any size) and dtype.

    Raises:
        InputError: naming `name`, what was expected and what arrived.
    """
    if not isinstance(array, np.ndarray):
        raise InputError(f'{name}: expected a numpy array, got {type(array).__name__}')
    if array.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(array.shape, shape, strict=False)
    ):
        want_str = '(' + ', '.join('any' if s is None else str(s) for s in shape) + ')'
        raise InputError(f'{name}: expected shape {want_str}, got {array.shape}')
    if dtypes is not None and not any(array.dtype == np.dtype(d) for d in dtypes):
        names = ' or '.join(np.dtype(d).name for d in dtypes)
        raise InputError(f'{name}: expected dtype {names}, got {array.dtype.name}')
    return array
