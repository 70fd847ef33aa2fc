# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Settings dataclasses <-> flat ROS 2 parameters, derived from the dataclasses themselves.

Each frozen settings dataclass (GraspConfig, SegmentationConfig, ...) is the one place a
setting is defined; its fields become parameters named by dotted path
(`segmentation.decode.min_score`). Description, range and read-only come from the field's
metadata, else from the table the caller passes, else from the comment on the field's line,
so what `ros2 param describe` shows cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

SCALARS = {bool: 'bool', int: 'int', float: 'float', str: 'str', Path: 'str'}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter as the node declares it and the parameter file holds it.

    `kind` is 'bool', 'int', 'float', 'str' or one of those followed by '[]' (an array).
    `default` is in ROS form (lists for arrays, enum values as strings).
    """

    name: str
    default: Any
    kind: str
    description: str
    range: tuple[float, float] | None = None
    read_only: bool = False
    choices: tuple[str, ...] = ()
    length: int | None = None  # fixed array length, when the field is a fixed-size tuple
    optional: bool = False  # an array field that may be None, written as []

    @property
    def section(self) -> str:
        return self.name.split('.', 1)[0]

    def constraints(self, *, full: bool = True) -> list[str]:
        """Rules beyond the type, in words.

        Without `full`, only what a ROS ParameterDescriptor cannot express itself (it has
        its own range and read-only fields).
        """
        out = []
        if self.choices:
            out.append('one of: ' + ', '.join(self.choices))
        if self.length is not None:
            out.append(f'{self.length} values' + (', or unset' if self.optional else ''))
        if full and self.range is not None:
            out.append(f'range [{_num(self.range[0])}, {_num(self.range[1])}]')
        if full and self.read_only:
            out.append('read-only')
        return out

    def describe(self) -> str:
        """Description with every constraint appended (the parameter file's comments)."""
        extra = self.constraints()
        return self.description + (f' ({"; ".join(extra)})' if extra else '')


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


@dataclass(frozen=True)
class _Leaf:
    spec: ParamSpec
    path: tuple[str, ...]
    py_type: Any  # the field's annotation, for converting back


@cache
def _field_docs(cls: type) -> dict[str, str]:
    """Field name -> its documentation in the class source.

    Reads the Google-style `Attributes:` section of the docstring (`a, b: text` documents
    both) and, for fields it does not cover, the trailing `# comment` on the field's line.
    """
    out: dict[str, str] = {}
    doc = inspect.cleandoc(cls.__doc__ or '')
    section = re.search(r'^Attributes:\n((?:[ \t]+.*\n?|\n)+)', doc, re.MULTILINE)
    if section:
        entries = re.findall(
            r'^[ \t]{4}([\w, ]+):\s*(.+(?:\n[ \t]{8,}.+)*)', section.group(1), re.MULTILINE
        )
        for names, text in entries:
            for name in names.split(','):
                out[name.strip()] = ' '.join(text.split()).rstrip('.')
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return out
    for m in re.finditer(r'^\s+(\w+)\s*:[^#\n]*#\s*(.+?)\s*$', source, re.MULTILINE):
        out.setdefault(m.group(1), m.group(2))
    return out


def _humanize(name: str) -> str:
    return name.replace('_', ' ').capitalize()


def _kind_of(tp: Any) -> tuple[str, tuple[str, ...], int | None] | None:
    """Annotation -> (kind, enum choices, fixed length); None if not a parameter type.

    `X | None` is accepted for arrays only (None is written as []); ROS parameters have no
    null, and an empty array is the one unambiguous stand-in.
    """
    inner_tp = _optional_inner(tp)
    if inner_tp is not None:
        kind = _kind_of(inner_tp)
        return kind if kind is not None and kind[0].endswith('[]') else None
    if tp in SCALARS:
        return SCALARS[tp], (), None
    if isinstance(tp, type) and issubclass(tp, Enum):
        return 'str', tuple(_enum_text(m) for m in tp), None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal and all(isinstance(a, str) for a in args):
        return 'str', tuple(args), None
    if origin in (tuple, list) and args:
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            elem, length = args[0], None
        elif all(a == args[0] for a in args):
            elem, length = args[0], len(args)
        else:
            return None
        inner = _kind_of(elem)
        if inner is None or inner[0].endswith('[]'):
            return None
        return inner[0] + '[]', inner[1], length
    return None


def _optional_inner(tp: Any) -> Any:
    """X for `X | None` / `Optional[X]`, else None."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return None
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 and len(typing.get_args(tp)) == 2 else None


def _enum_text(member: Enum) -> str:
    return member.value if isinstance(member.value, str) else member.name.lower()


def to_ros(value: Any) -> Any:
    """A settings value in parameter form: lists for tuples, text for enums, [] for None."""
    if value is None:
        return []
    if isinstance(value, Enum):
        return _enum_text(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [to_ros(v) for v in value]
    return value


@dataclass(frozen=True)
class SectionDoc:
    """Documentation a caller adds for fields that carry no metadata of their own."""

    descriptions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ranges: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    read_only: frozenset[str] = frozenset()
    live: frozenset[str] = frozenset()  # exceptions to a read-only section


def leaves(section: str, cls: type, *, read_only: bool, doc: SectionDoc) -> list[_Leaf]:
    """Every parameter of dataclass `cls` under `section`, nested dataclasses flattened."""
    out: list[_Leaf] = []
    _collect(out, (section,), cls, cls(), read_only, doc)
    return out


def unexposed(cls: type) -> list[str]:
    """Fields (dotted, recursive) whose type cannot be a ROS parameter."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += [f'{f.name}.{n}' for n in unexposed(tp)]  # type: ignore[arg-type]
        elif _kind_of(tp) is None:
            out.append(f.name)
    return out


def _collect(
    out: list[_Leaf],
    path: tuple[str, ...],
    cls: type,
    instance: Any,
    read_only: bool,
    doc: SectionDoc,
) -> None:
    hints = typing.get_type_hints(cls)
    comments = _field_docs(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        value = getattr(instance, f.name)
        fpath = (*path, f.name)
        name = '.'.join(fpath)
        if dataclasses.is_dataclass(tp):
            _collect(out, fpath, tp, value, read_only, doc)  # type: ignore[arg-type]
            continue
        kind = _kind_of(tp)
        if kind is None:
            continue  # not expressible as a ROS parameter; keeps its default
        meta = f.metadata
        key = '.'.join(fpath[1:])
        ro = meta.get('read_only')
        if ro is None:
            ro = (read_only and key not in doc.live) or key in doc.read_only
        rng = meta.get('range', doc.ranges.get(key))
        description = (
            meta.get('description')
            or doc.descriptions.get(key)
            or comments.get(f.name)
            or _humanize(f.name)
        )
        spec = ParamSpec(
            name=name,
            default=to_ros(value),
            kind=kind[0],
            description=description,
            range=None if rng is None else (float(rng[0]), float(rng[1])),
            read_only=bool(ro),
            choices=kind[1],
            length=kind[2],
            optional=_optional_inner(tp) is not None,
        )
        out.append(_Leaf(spec, fpath, tp))


# --- values from a parameter file or the ROS parameter server -> dataclasses -----------------


def _check_value(spec: ParamSpec, value: Any) -> str | None:
    """None when `value` fits `spec`, else what is wrong (without the name)."""
    base = spec.kind.removesuffix('[]')
    if spec.kind.endswith('[]'):
        if not isinstance(value, (list, tuple)):
            return f'expected a list of {base}, got {value!r}'
        if spec.optional and len(value) == 0:
            return None
        if spec.length is not None and len(value) != spec.length:
            return f'expected {spec.length} values, got {len(value)}'
        items = list(value)
    else:
        items = [value]
    for v in items:
        problem = _check_scalar(base, spec, v)
        if problem:
            return problem
    return None


def _check_scalar(base: str, spec: ParamSpec, v: Any) -> str | None:
    if base == 'bool' and not isinstance(v, bool):
        return f'expected true or false, got {v!r}'
    if base == 'int' and (isinstance(v, bool) or not isinstance(v, int)):
        return f'expected an integer, got {v!r}'
    if base == 'float':
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f'expected a number, got {v!r}'
        if not math.isfinite(float(v)):
            return f'expected a finite number, got {v!r}'
    if base == 'str' and not isinstance(v, str):
        return f'expected a string, got {v!r} (quote it in YAML)'
    if spec.choices and v not in spec.choices:
        return f'{v!r} is not one of {", ".join(spec.choices)}'
    if spec.range is not None and base in ('int', 'float'):
        lo, hi = spec.range
        if not lo <= v <= hi:
            return f'{v!r} is outside [{_num(lo)}, {_num(hi)}]'
    return None


def _from_ros(tp: Any, value: Any) -> Any:
    inner = _optional_inner(tp)
    if inner is not None:
        return None if len(value) == 0 else _from_ros(inner, value)
    if tp is float:
        return float(value)
    if tp is Path:
        return Path(value)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return next(m for m in tp if _enum_text(m) == value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        elem = args[0]
        return tuple(_from_ros(elem, v) for v in value)
    if origin is list:
        return [_from_ros(args[0], v) for v in value]
    return value


def build(
    cls: type,
    section: str,
    all_leaves: Sequence[_Leaf],
    values: Mapping[str, Any],
    problems: list[str],
) -> Any:
    """Instantiate `cls` (a section) from flat dotted `values`; defaults fill the gaps.

    Bad values are appended to `problems` (each naming its parameter) and the default used,
    so one pass reports every mistake.
    """
    nested: dict[str, Any] = {}
    for leaf in all_leaves:
        if leaf.path[0] != section or leaf.spec.name not in values:
            continue
        value = values[leaf.spec.name]
        problem = _check_value(leaf.spec, value)
        if problem:
            problems.append(f'{leaf.spec.name}: {problem}')
            continue
        node = nested
        for part in leaf.path[1:-1]:
            node = node.setdefault(part, {})
        node[leaf.path[-1]] = _from_ros(leaf.py_type, value)
    return _instantiate(cls, section, nested, problems)


def _instantiate(cls: type, prefix: str, nested: Mapping[str, Any], problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in nested.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            value = _instantiate(tp, f'{prefix}.{name}', value, problems)  # type: ignore[arg-type]
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        text = str(err)
        problems.append(text if text.startswith(prefix) else f'{prefix}: {text}')
        return cls()


def unknown_names(known: Sequence[str], given: Sequence[str]) -> list[str]:
    """Messages for names that are not parameters, each with the closest known name."""
    out = []
    for name in given:
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f'; did you mean {close[0]}?' if close else ''
        section = name.split('.', 1)[0]
        if not close:
            same = [k for k in known if k.split('.', 1)[0] == section]
            hint = f'; {section} has: {", ".join(same)}' if same else ''
        out.append(f'{name}: not a parameter of this node{hint}')
    return out


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; dotted keys pass through (ROS allows both)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, Mapping):
            out.update(flatten(value, name + '.'))
        else:
            out[name] = value
    return out
