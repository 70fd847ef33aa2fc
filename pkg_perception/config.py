# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The one configuration of the perception system, read from the ROS 2 parameter file.

`config/perception.yaml` is a ROS 2 parameter file (`perception_node: ros__parameters:`)
with sections segmentation / grasping / tracking / frames / node. The node declares one
parameter per setting from `parameter_specs()`; the offline commands load the same file
with `load_config`. Both end in the same frozen dataclasses and the same `build_pipeline`.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pkg_perception.errors import ConfigError
from pkg_perception.grasping import GraspConfig
from pkg_perception.params import (
    ParamSpec,
    SectionDoc,
    build,
    flatten,
    leaves,
    to_ros,
    unknown_names,
)
from pkg_perception.segmentation.config import SegmentationConfig
from pkg_perception.tracking import TrackingConfig

if TYPE_CHECKING:
    from pkg_perception.pipeline import Pipeline

NODE_NAME = 'perception_node'
# Parameters every rclpy node has; a parameter file may set them next to ours.
ROS_BUILTIN = ('use_sim_time', 'qos_overrides', 'start_type_description_service')


@dataclass(frozen=True)
class FramesConfig:
    """Where outputs are expressed and where the belt is (config section `frames`)."""

    target_frame: str = field(
        default='base_link',
        metadata={
            'description': 'frame of every pose the node publishes (robot base); when TF '
            'has no transform to it, outputs stay in the camera frame and diagnostics say so'
        },
    )
    conveyor_frame: str = field(
        default='conveyor',
        metadata={
            'description': "belt frame (z up, origin on the belt surface) from TF; '' or "
            'missing: the belt plane is estimated from depth each frame'
        },
    )
    tf_timeout_s: float = field(
        default=0.05,
        metadata={
            'description': 'seconds to wait for a transform before falling back',
            'range': (0.0, 1.0),
        },
    )


@dataclass(frozen=True)
class NodeConfig:
    """Topics, synchronization and outputs of the ROS node (config section `node`)."""

    camera_namespace: str = field(
        default='/camera',
        metadata={
            'description': "namespace of the camera topics ('/camera/camera' for "
            'realsense-ros 4.x)',
            'read_only': True,
        },
    )
    color_topic: str = field(
        default='color/image_raw',
        metadata={'description': 'colour image, relative to camera_namespace', 'read_only': True},
    )
    depth_topic: str = field(
        default='aligned_depth_to_color/image_raw',
        metadata={
            'description': 'depth registered to colour (16UC1 mm or 32FC1 m), relative to '
            'camera_namespace',
            'read_only': True,
        },
    )
    camera_info_topic: str = field(
        default='color/camera_info',
        metadata={
            'description': "the colour camera's CameraInfo, relative to camera_namespace",
            'read_only': True,
        },
    )
    sync_slop_s: float = field(
        default=0.02,
        metadata={
            'description': 'largest stamp difference between colour and depth paired by '
            'the approximate-time synchronizer',
            'range': (0.0005, 1.0),
            'read_only': True,
        },
    )
    sync_queue_size: int = field(
        default=5,
        metadata={
            'description': 'messages per topic the synchronizer keeps while pairing',
            'range': (1, 100),
            'read_only': True,
        },
    )
    reliable: bool = field(
        default=False,
        metadata={
            'description': 'subscribe with reliable QoS instead of sensor-data (best '
            'effort); best effort also receives from reliable publishers',
            'read_only': True,
        },
    )
    publish_overlay: bool = field(
        default=True, metadata={'description': 'publish ~/overlay (masks on the colour image)'}
    )
    publish_markers: bool = field(
        default=True, metadata={'description': 'publish ~/markers (boxes, grasp arrows, labels)'}
    )
    publish_points: bool = field(
        default=False,
        metadata={'description': 'publish ~/points (parcel points; costs bandwidth)'},
    )
    points_stride: int = field(
        default=2,
        metadata={
            'description': 'keep every n-th pixel row and column in ~/points',
            'range': (1, 16),
        },
    )
    diagnostics_period_s: float = field(
        default=1.0,
        metadata={
            'description': 'seconds between /diagnostics messages',
            'range': (0.1, 60.0),
            'read_only': True,
        },
    )
    camera_info_warn_period_s: float = field(
        default=5.0,
        metadata={
            'description': 'seconds between repeated warnings while camera_info is missing',
            'range': (0.5, 600.0),
        },
    )


# Descriptions and ranges for fields whose dataclasses carry no metadata. The comment on a
# field's own line is used when it has neither.
SEGMENTATION_DOC = SectionDoc(
    descriptions={
        'model_path': "ONNX model file; '' = the shipped models/parcelnet.onnx",
        'providers': 'ONNX Runtime execution providers to try, in order',
        'threads': 'ONNX Runtime intra-op threads on the CPU provider',
        'trt_fp16': 'let TensorRT build FP16 engines',
        'cpu_int8': "on the CPU provider, run the model's INT8 sibling (<model>.int8.onnx) "
        'when it was quantized from that very file',
        'trt_cache_dir': 'where TensorRT engines are cached between runs',
        'warmup_runs': 'inference runs on a blank input at load, before the first frame',
        'fallback_to_geometric': 'if the model cannot be loaded, run the depth-only '
        'geometric segmenter instead of failing',
        'use_geometric': 'run the depth-only geometric segmenter instead of the model',
        'min_valid_depth': 'below this share of valid depth pixels a frame gives no parcels '
        '(flag no_valid_depth)',
        'instance_head': "let the model file's instance head set each mask's class and score "
        '(false: mean class probabilities in the mask)',
        'mirror_pass': "also run the network on the frame's left-right mirror image and "
        'average the two: gpu = when a GPU provider (TensorRT, CUDA) runs the model, always = '
        'also on the CPU (about twice the inference time), never',
        'temporal_weight': "share of the previous frame's network output, moved along with "
        "the belt, in this frame's (0 = off; needs the belt velocity, configured or estimated)",
        'decode.seed_threshold': 'edge-distance probability that marks a seed pixel',
        'decode.weak_seed_threshold': 'a blob above this with no seed in it seeds a thin '
        'parcel (1 = off)',
        'decode.min_seed_pixels': 'smallest seed blob, model-output pixels',
        'decode.grow_distance': 'model-input pixels a mask may extend beyond its seed',
        'decode.min_score': 'instances with a lower class score are dropped',
        'decode.min_area': 'instances smaller than this many frame pixels are dropped',
        'decode.confident_area': 'masks smaller than this many frame pixels have their score '
        'scaled by sqrt(area / confident_area): small masks are more often fragments (0 = off)',
        'decode.embed_threshold': 'models with an embedding head: a mask whose pixel '
        'embeddings form clusters this far apart splits into parcels (0 = off)',
        'decode.embed_min_pixels': 'smallest part that splits off, model-output pixels',
        'decode.head_class_weight': "weight of the instance head's class probabilities "
        "against the mask's mean pixel probabilities (geometric blend; 1 = head alone)",
        'decode.alternative_classes': 'other classes each mask also offers with their scores, '
        'most likely first (mask AP scoring, vision_msgs hypotheses; 0 = one class per mask)',
        'decode.outline_band': 'outlines between instances are redrawn along the colour '
        "image's edges within this many model-input pixels (0 = off)",
        'decode.belt_band': "outlines against the belt are redrawn along the colour image's "
        'edges within this many model-input pixels (0 = off)',
    },
    ranges={
        'threads': (1, 64),
        'warmup_runs': (0, 100),
        'min_valid_depth': (0.0, 0.999),
        'decode.seed_threshold': (0.0, 1.0),
        'decode.weak_seed_threshold': (0.0, 1.0),
        'decode.min_seed_pixels': (1, 10000),
        'decode.grow_distance': (0.0, 100.0),
        'decode.min_score': (0.0, 1.0),
        'decode.min_area': (0, 1000000),
        'decode.confident_area': (0, 10000000),
        'decode.embed_threshold': (0.0, 100.0),
        'decode.embed_min_pixels': (1, 100000),
        'decode.head_class_weight': (0.0, 1.0),
        'decode.alternative_classes': (0, 3),
        'decode.outline_band': (0.0, 20.0),
        'decode.belt_band': (0.0, 20.0),
    },
)
GRASPING_DOC = SectionDoc(
    descriptions={
        'suction': 'plan suction grasps',
        'parallel_jaw': 'plan parallel-jaw grasps',
        'finger_depth': 'how far the fingers reach below the top surface, metres',
        'finger_width': 'finger width, metres',
        'max_candidates': 'grasp candidates kept per frame, best first',
        'min_score': 'grasp candidates scoring below this are dropped',
        'lift.max_points': 'depth points sampled per parcel mask',
        'lift.min_points': 'masks with fewer valid depth points are not lifted to 3D',
        'lift.plane_tolerance': 'distance from the top plane that counts as on it, metres',
        'lift.depth_noise_at_1m': 'depth noise of the camera at 1 m, metres',
        'lift.max_plane_tilt_deg': 'top planes tilted more than this are not trusted',
        'lift.pile_step': 'height step between touching parcels that means one lies on '
        'the other, metres',
        'lift.min_thickness': 'least thickness given to a parcel box, metres',
    },
    ranges={
        'max_tilt_deg': (0.0, 90.0),
        'jaw_score_scale': (0.0, 1.0),
        'min_score': (0.0, 1.0),
        'under_penalty': (0.0, 1.0),
        'rounded_crown_penalty': (0.0, 1.0),
        'max_candidates_per_parcel': (1, 100),
        'max_candidates': (1, 10000),
        'min_cup_points': (1, 100000),
        'lift.max_points': (10, 1000000),
        'lift.min_points': (3, 100000),
        'lift.max_plane_tilt_deg': (0.0, 90.0),
    },
)
TRACKING_DOC = SectionDoc(
    descriptions={
        'belt_velocity': 'belt velocity (vx, vy, vz) m/s in the conveyor frame; [] estimates '
        'it from the tracks',
        'max_gap_s': 'a longer pause between frame stamps, or a step back in time (bag loop), '
        'resets tracking',
    },
    ranges={
        'match_gate': (0.001, 10.0),
        'max_missed': (0, 1000),
        'max_gap_s': (0.01, 3600.0),
        'velocity_window': (1, 10000),
        'class_penalty': (0.0, 10.0),
        'class_memory': (0.0, 10.0),
    },
)

# section -> (dataclass, every field read-only unless it says otherwise, documentation).
# Segmentation settings live in the loaded model session: changing one means reloading.
SECTIONS: dict[str, tuple[type, bool, SectionDoc]] = {
    'segmentation': (SegmentationConfig, True, SEGMENTATION_DOC),
    'grasping': (GraspConfig, False, GRASPING_DOC),
    'tracking': (TrackingConfig, False, TRACKING_DOC),
    'frames': (FramesConfig, False, SectionDoc()),
    'node': (NodeConfig, False, SectionDoc()),
}


@lru_cache(maxsize=1)
def _all_leaves() -> tuple[Any, ...]:
    return tuple(
        leaf
        for name, (cls, read_only, doc) in SECTIONS.items()
        for leaf in leaves(name, cls, read_only=read_only, doc=doc)
    )


def parameter_specs() -> list[ParamSpec]:
    """Every setting as (dotted name, default, description, range, read-only, ...)."""
    return [leaf.spec for leaf in _all_leaves()]


@dataclass(frozen=True)
class PerceptionConfig:
    """Everything the node and the offline commands are configured with."""

    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    grasping: GraspConfig = field(default_factory=GraspConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    node: NodeConfig = field(default_factory=NodeConfig)

    @classmethod
    def from_flat(
        cls, values: Mapping[str, Any], *, source: str = 'parameters'
    ) -> PerceptionConfig:
        """From dotted names (what the node reads back from its parameters).

        Raises:
            ConfigError: listing every unknown or invalid parameter by name, with the fix.
        """
        ours = {k: v for k, v in values.items() if k.split('.', 1)[0] not in ROS_BUILTIN}
        specs = parameter_specs()
        problems = unknown_names([s.name for s in specs], list(ours))
        sections = {
            name: build(section_cls, name, _all_leaves(), ours, problems)
            for name, (section_cls, _, _) in SECTIONS.items()
        }
        if problems:
            lines = '\n  '.join(problems)
            raise ConfigError(
                f'{source}: {len(problems)} invalid setting(s):\n  {lines}\n'
                'Fix them in the parameter file (see `ros2 param describe` or the README).'
            )
        return cls(**sections)

    @classmethod
    def from_parameters(
        cls, params: Mapping[str, Any], *, source: str = 'parameters'
    ) -> PerceptionConfig:
        """From the nested `ros__parameters` mapping of a parameter file."""
        return cls.from_flat(flatten(params), source=source)

    def to_flat(self) -> dict[str, Any]:
        """Dotted name -> value in ROS form (lists for tuples, strings for enums)."""
        out = {}
        for leaf in _all_leaves():
            obj: Any = self
            for part in leaf.path:
                obj = getattr(obj, part)
            out[leaf.spec.name] = to_ros(obj)
        return out

    def with_overrides(
        self, values: Mapping[str, Any], *, source: str = 'overrides'
    ) -> PerceptionConfig:
        """A copy with some dotted settings changed (CLI flags, launch arguments)."""
        return PerceptionConfig.from_flat({**self.to_flat(), **values}, source=source)

    def changed(self, other: PerceptionConfig) -> list[str]:
        """Dotted names whose values differ between the two configs."""
        a, b = self.to_flat(), other.to_flat()
        return [k for k in a if a[k] != b[k]]


def parameter_file_section(data: Any, *, node_name: str = NODE_NAME, source: str) -> dict:
    """The merged `ros__parameters` for `node_name` in a parsed parameter file.

    ROS 2 applies `/**` (every node) first, then the node's own entry; so do we.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f'{source}: not a ROS 2 parameter file; expected "{node_name}:" with '
            '"ros__parameters:" below it'
        )
    merged: dict[str, Any] = {}
    found = False
    for key in ('/**', node_name, '/' + node_name):
        entry = data.get(key)
        if entry is None:
            continue
        if not isinstance(entry, Mapping) or 'ros__parameters' not in entry:
            raise ConfigError(f'{source}: "{key}:" has no "ros__parameters:" mapping below it')
        merged.update(flatten(entry['ros__parameters'] or {}))
        found = True
    if not found:
        raise ConfigError(
            f'{source}: no "{node_name}:" (or "/**:") entry with "ros__parameters:"; '
            f'top-level keys are: {", ".join(map(str, data)) or "(none)"}'
        )
    return merged


def load_config(
    path: Path | str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    node_name: str = NODE_NAME,
) -> PerceptionConfig:
    """Read a ROS 2 parameter file (None: the defaults) and apply dotted overrides.

    Raises:
        ConfigError: the file is missing, is not YAML, or holds invalid settings.
    """
    flat: dict[str, Any] = {}
    source = 'defaults'
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f'config file {p} not found; pass the path of perception.yaml')
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f'{p} is not valid YAML: {err}') from None
        flat = parameter_file_section(data, node_name=node_name, source=source)
    flat.update(overrides or {})
    return PerceptionConfig.from_flat(flat, source=source)


def parse_override(text: str) -> tuple[str, Any]:
    """'grasping.min_score=0.4' -> ('grasping.min_score', 0.4), the value parsed as YAML."""
    name, sep, value = text.partition('=')
    if not sep or not name.strip():
        raise ConfigError(f'override {text!r}: write it as section.name=value')
    return name.strip(), yaml.safe_load(value) if value.strip() else ''


def render_parameter_file(config: PerceptionConfig | None = None) -> str:
    """A commented ROS 2 parameter file holding every setting (config/perception.yaml).

    Unset optional arrays are written commented out: rcl's parameter-file parser cannot
    type an empty list.
    """
    flat = (config or PerceptionConfig()).to_flat()
    lines = [
        '# pkg_perception settings: a ROS 2 parameter file, read by perception_node and by the',
        '# offline commands alike. Generated by `python -m pkg_perception.config` from the',
        '# settings classes (descriptions also via `ros2 param describe`). Read-only settings',
        '# take effect on restart; the others can be changed with `ros2 param set`.',
        f'{NODE_NAME}:',
        '  ros__parameters:',
    ]
    opened: list[str] = []
    for spec in parameter_specs():
        parts = spec.name.split('.')
        for depth, part in enumerate(parts[:-1]):
            if len(opened) <= depth or opened[depth] != part:
                opened = [*opened[:depth], part]
                lines.append('    ' + '  ' * depth + f'{part}:')
        indent = '    ' + '  ' * (len(parts) - 1)
        lines += textwrap.wrap(
            spec.describe(),
            width=99,
            initial_indent=indent + '# ',
            subsequent_indent=indent + '#   ',
        )
        value = flat[spec.name]
        if spec.optional and value == []:
            example = [0.0] * (spec.length or 1)
            lines.append(f'{indent}# {parts[-1]}: {_yaml_value(example)}')
        else:
            lines.append(f'{indent}{parts[-1]}: {_yaml_value(value)}')
    return '\n'.join(lines) + '\n'


def _yaml_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000)
    return text.replace('\n...\n', '').strip()


def build_pipeline(config: PerceptionConfig, *, segmenter: Any = None) -> Pipeline:
    """The Pipeline these settings describe; `segmenter` reuses an already loaded one."""
    from pkg_perception.pipeline import Pipeline

    seg = segmenter if segmenter is not None else build_segmenter(config.segmentation)
    return Pipeline(
        seg,
        grasping=config.grasping,
        tracking=config.tracking,
        target_frame=config.frames.target_frame,
    )


def build_segmenter(config: SegmentationConfig) -> Any:
    """The model (loaded and warmed up), or the geometric segmenter when configured to.

    Raises:
        ModelError: the model cannot be loaded and `fallback_to_geometric` is false.
    """
    from pkg_perception.errors import ModelError

    if config.use_geometric:
        return _geometric(config)
    from pkg_perception.models import default_model_path
    from pkg_perception.segmentation.onnx import OnnxSegmenter

    path = config.model_path or str(default_model_path())
    try:
        return OnnxSegmenter(path, config)
    except (ModelError, ImportError) as err:
        if not config.fallback_to_geometric:
            raise ModelError(
                f'{err} (or set segmentation.fallback_to_geometric: true to run the '
                'depth-only segmenter instead)'
            ) from err
        import logging

        logging.getLogger(__name__).warning(
            'segmentation: %s; falling back to the geometric segmenter '
            '(segmentation.fallback_to_geometric is true)',
            err,
        )
        return _geometric(config)


def _geometric(config: SegmentationConfig) -> Any:
    from pkg_perception.segmentation.geometric import GeometricSegmenter

    return GeometricSegmenter()


def main(argv: Iterable[str] | None = None) -> int:
    """`python -m pkg_perception.config [--check FILE] [--write FILE]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', type=Path, help='validate a parameter file')
    parser.add_argument('--write', type=Path, help='write the default parameter file here')
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        if args.check:
            load_config(args.check)
            print(f'{args.check}: ok')
        text = render_parameter_file()
        if args.write:
            args.write.write_text(text)
        elif not args.check:
            sys.stdout.write(text)
    except ConfigError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
