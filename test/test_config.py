# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The parameter file, the flat parameter list and validation messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pytest
import yaml

from pkg_perception.config import (
    SECTIONS,
    FramesConfig,
    NodeConfig,
    PerceptionConfig,
    build_pipeline,
    build_segmenter,
    load_config,
    main,
    parameter_specs,
    parse_override,
    render_parameter_file,
)
from pkg_perception.errors import ConfigError, ModelError
from pkg_perception.params import SectionDoc, build, leaves, unexposed

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / 'config' / 'perception.yaml'


def write(tmp_path: Path, params: dict, node: str = 'perception_node') -> Path:
    path = tmp_path / 'p.yaml'
    path.write_text(yaml.safe_dump({node: {'ros__parameters': params}}))
    return path


def test_shipped_file_is_generated_from_the_settings_classes() -> None:
    assert SHIPPED.read_text() == render_parameter_file(), (
        'config/perception.yaml is out of date: run '
        '`python -m pkg_perception.config --write config/perception.yaml`'
    )
    assert load_config(SHIPPED) == PerceptionConfig()


def test_every_setting_is_a_parameter_with_a_description() -> None:
    specs = parameter_specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    for section, (cls, _, _) in SECTIONS.items():
        assert unexposed(cls) == [], f'{section} has fields a ROS parameter cannot hold'
    for s in specs:
        assert s.description != s.name.split('.')[-1].replace('_', ' ').capitalize()
        assert s.kind in {'bool', 'int', 'float', 'str', 'bool[]', 'int[]', 'float[]', 'str[]'}
    by_name = {s.name: s for s in specs}
    assert by_name['segmentation.model_path'].read_only
    assert by_name['node.sync_slop_s'].read_only
    assert by_name['node.sync_slop_s'].range == (0.0005, 1.0)
    assert not by_name['grasping.min_score'].read_only
    assert by_name['grasping.lift.max_points'].kind == 'int'
    velocity = by_name['tracking.belt_velocity']
    assert (velocity.kind, velocity.length, velocity.optional, velocity.default) == (
        'float[]',
        3,
        True,
        [],
    )
    # Read from the Attributes section of GraspConfig's docstring.
    assert by_name['grasping.cup_radius'].description.startswith('suction cup radius')


def test_file_values_and_overrides_reach_the_dataclasses(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            'grasping': {'min_score': 0.4, 'lift': {'max_points': 500}},
            'tracking': {'belt_velocity': [0.3, 0, 0]},  # ints where floats are due: fine
            'segmentation.decode.min_score': 0.5,  # dotted keys work as in ROS
            'node': {'camera_namespace': '/camera/camera'},
            'use_sim_time': True,  # a ROS built-in, not ours: ignored
        },
    )
    cfg = load_config(path, overrides={'frames.target_frame': 'world'})
    assert cfg.grasping.min_score == 0.4 and cfg.grasping.lift.max_points == 500
    assert cfg.tracking.belt_velocity == (0.3, 0.0, 0.0)
    assert isinstance(cfg.tracking.belt_velocity[1], float)
    assert cfg.segmentation.decode.min_score == 0.5
    assert cfg.node.camera_namespace == '/camera/camera'
    assert cfg.frames == FramesConfig(target_frame='world')
    assert PerceptionConfig.from_flat(cfg.to_flat()) == cfg
    assert cfg.changed(PerceptionConfig()) == [
        'segmentation.decode.min_score',
        'grasping.min_score',
        'grasping.lift.max_points',
        'tracking.belt_velocity',
        'frames.target_frame',
        'node.camera_namespace',
    ]


def test_wildcard_entry_applies_first(tmp_path: Path) -> None:
    path = tmp_path / 'p.yaml'
    path.write_text(
        yaml.safe_dump(
            {
                '/**': {'ros__parameters': {'grasping': {'min_score': 0.2, 'max_candidates': 5}}},
                'perception_node': {'ros__parameters': {'grasping': {'min_score': 0.3}}},
            }
        )
    )
    cfg = load_config(path)
    assert (cfg.grasping.min_score, cfg.grasping.max_candidates) == (0.3, 5)


@pytest.mark.parametrize(
    ('params', 'message'),
    [
        ({'grasping': {'min_scor': 0.1}}, r'grasping\.min_scor: not a parameter.*min_score\?'),
        ({'nodes': {'x': 1}}, r'nodes\.x: not a parameter'),
        ({'node': {'sync_slop_s': 5.0}}, r'node\.sync_slop_s: 5\.0 is outside \[0\.0005, 1\]'),
        ({'node': {'sync_queue_size': 2.5}}, r'node\.sync_queue_size: expected an integer'),
        ({'node': {'publish_points': 'yes'}}, r'node\.publish_points: expected true or false'),
        ({'frames': {'target_frame': 3}}, r'frames\.target_frame: expected a string'),
        ({'tracking': {'belt_velocity': [0.3]}}, r'tracking\.belt_velocity: expected 3 values'),
        ({'segmentation': {'providers': ['cuda', 'rocm']}}, r'segmentation\.providers'),
        ({'grasping': {'cup_radius': -0.01}}, r'grasping\.cup_radius = -0\.01 must be a positive'),
        ({'grasping': {'max_tilt_deg': 120.0}}, r'grasping\.max_tilt_deg: 120\.0 is outside'),
    ],
)
def test_invalid_settings_name_the_parameter(tmp_path: Path, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, params))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, {'node': {'sync_slop_s': -1.0, 'points_stride': 0}, 'bogus': 1})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert '3 invalid setting(s)' in text and str(path) in text
    for name in ('node.sync_slop_s', 'node.points_stride', 'bogus'):
        assert name in text


@pytest.mark.parametrize(
    ('text', 'message'),
    [
        ('[1, 2', 'not valid YAML'),
        ('just a string', 'not a ROS 2 parameter file'),
        ('other_node:\n  ros__parameters: {}\n', 'no "perception_node:"'),
        ('perception_node:\n  min_score: 1\n', 'no "ros__parameters:"'),
    ],
)
def test_malformed_files_are_explained(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    with pytest.raises(ConfigError, match='not found'):
        load_config(tmp_path / 'missing.yaml')


def test_overrides_parse_as_yaml() -> None:
    assert parse_override('grasping.min_score=0.4') == ('grasping.min_score', 0.4)
    assert parse_override('tracking.belt_velocity=[0.3, 0, 0]')[1] == [0.3, 0, 0]
    assert parse_override('frames.target_frame=') == ('frames.target_frame', '')
    with pytest.raises(ConfigError, match=r'section\.name=value'):
        parse_override('grasping.min_score')
    cfg = PerceptionConfig().with_overrides({'node.publish_points': True})
    assert cfg.node == NodeConfig(publish_points=True)


def test_config_command_checks_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / 'written.yaml'
    assert main(['--write', str(out)]) == 0
    assert main(['--check', str(out)]) == 0
    assert main(['--check', str(write(tmp_path, {'node': {'reliable': 1}}))]) == 2
    assert 'node.reliable: expected true or false' in capsys.readouterr().err


class Tool(str, Enum):
    SUCTION = 'suction'
    JAW = 'jaw'


@dataclass(frozen=True)
class Inner:
    """Nested settings.

    Attributes:
        gain, bias: documented together.
    """

    gain: float = 1.0
    bias: float = 0.0


@dataclass(frozen=True)
class Example:
    tool: Tool = Tool.SUCTION  # which tool
    sizes: tuple[int, ...] = (1, 2)
    size: tuple[float, float] = (0.1, 0.2)
    names: list[str] = field(default_factory=lambda: ['a'])
    inner: Inner = field(default_factory=Inner)
    limit: float = field(default=1.0, metadata={'range': (0, 2), 'read_only': True})
    blob: dict = field(default_factory=dict)  # not a parameter type


def test_reflection_covers_enums_tuples_nesting_and_docs() -> None:
    doc = SectionDoc(descriptions={'sizes': 'sizes to try'})
    specs = {leaf.spec.name: leaf.spec for leaf in leaves('ex', Example, read_only=False, doc=doc)}
    assert set(specs) == {
        'ex.tool',
        'ex.sizes',
        'ex.size',
        'ex.names',
        'ex.inner.gain',
        'ex.inner.bias',
        'ex.limit',
    }
    assert unexposed(Example) == ['blob']
    tool = specs['ex.tool']
    assert (tool.kind, tool.default, tool.choices, tool.description) == (
        'str',
        'suction',
        ('suction', 'jaw'),
        'which tool',
    )
    assert (specs['ex.sizes'].kind, specs['ex.sizes'].default) == ('int[]', [1, 2])
    assert (specs['ex.size'].kind, specs['ex.size'].length) == ('float[]', 2)
    assert specs['ex.sizes'].description == 'sizes to try'
    assert specs['ex.inner.gain'].description == 'documented together'
    assert specs['ex.limit'].read_only and specs['ex.limit'].range == (0.0, 2.0)
    all_leaves = leaves('ex', Example, read_only=False, doc=doc)
    problems: list[str] = []
    built = build(
        Example,
        'ex',
        all_leaves,
        {'ex.tool': 'jaw', 'ex.size': [1, 2], 'ex.inner.bias': 0.5, 'ex.names': ['x', 'y']},
        problems,
    )
    assert problems == []
    assert built == Example(
        tool=Tool.JAW, size=(1.0, 2.0), inner=Inner(bias=0.5), names=['x', 'y']
    )
    build(Example, 'ex', all_leaves, {'ex.tool': 'hook', 'ex.limit': 3}, problems)
    assert problems == [
        "ex.tool: 'hook' is not one of suction, jaw",
        'ex.limit: 3 is outside [0, 2]',
    ]


def test_model_that_fails_to_load_stops_or_falls_back(tmp_path: Path) -> None:
    missing = str(tmp_path / 'none.onnx')
    cfg = load_config(overrides={'segmentation.model_path': missing})
    with pytest.raises(ModelError, match='fallback_to_geometric'):
        build_segmenter(cfg.segmentation)
    cfg = cfg.with_overrides({'segmentation.fallback_to_geometric': True})
    assert build_segmenter(cfg.segmentation).name == 'geometric'
    pipeline = build_pipeline(cfg.with_overrides({'frames.target_frame': 'world'}))
    assert pipeline.target_frame == 'world' and pipeline.segmenter.name == 'geometric'
