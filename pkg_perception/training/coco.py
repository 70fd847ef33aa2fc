# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Fine-tuning data: COCO instance annotations of a cell's own RGB-D images.

Layout (docs/fine-tuning.md): annotations.json (COCO, categories named like our classes),
colour images where `file_name` points, and for each image a 16-bit depth PNG in
millimetres aligned to colour at depth/<stem>.png. Intrinsics come from a `camera` entry
({fx, fy, cx, cy}) on the image, at the top level of the JSON, or in camera.json next to it.
The belt plane comes from `conveyor_from_camera` (4x4) where given, else from the depth.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.classes import ParcelClass
from pkg_perception.errors import InputError
from pkg_perception.frames import CameraModel, depth_from_millimetres
from pkg_perception.segmentation.belt import BeltPlane, estimate_belt_plane
from pkg_perception.segmentation.inputs import InputSpec
from pkg_perception.training.samples import make_sample, stack
from pkg_perception.training.train import Arrays

VAL_FRACTION = 0.1


def _camera(entry: dict[str, Any], top: dict[str, Any], root: Path, w: int, h: int):
    cam = entry.get('camera') or top.get('camera')
    if cam is None and (root / 'camera.json').exists():
        cam = json.loads((root / 'camera.json').read_text())
    if cam is None:
        raise InputError(
            f'image {entry.get("file_name")}: no intrinsics; add "camera": {{"fx", "fy", "cx", '
            f'"cy"}} to the image, to the JSON top level, or a camera.json in {root}'
        )
    return CameraModel(
        w, h, float(cam['fx']), float(cam['fy']), float(cam['cx']), float(cam['cy'])
    )


def _read(path: Path, flags: int, what: str) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise InputError(f'{what} {path} is missing or unreadable')
    return img


@dataclass(frozen=True)
class CocoFrame:
    """One labelled image with what the pipeline needs beside it."""

    color: npt.NDArray[np.uint8]  # (H, W, 3) RGB
    depth: npt.NDArray[np.float32]  # (H, W) metres, NaN invalid
    camera: CameraModel
    belt: BeltPlane
    labels: npt.NDArray[np.uint16]  # (H, W) instance 1..n, 0 none
    class_of: dict[int, int]  # instance -> ParcelClass value


def coco_frames(annotations: Path) -> Iterator[CocoFrame]:
    """The dataset's images in id order, read one at a time (a few hundred fit no memory)."""
    from pycocotools.coco import COCO

    if not annotations.is_file():
        raise InputError(f'COCO annotations {annotations} not found')
    top = json.loads(annotations.read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(annotations))
    root = annotations.parent
    cat_class = {}
    for cat in coco.loadCats(coco.getCatIds()):
        try:
            cat_class[cat['id']] = int(ParcelClass.from_label(cat['name']))
        except ValueError as err:
            raise InputError(f'{annotations}: category {cat["name"]!r}: {err}') from None
    image_ids = sorted(coco.getImgIds())
    if not image_ids:
        raise InputError(f'{annotations} lists no images')
    for image_id in image_ids:
        entry = coco.loadImgs(image_id)[0]
        color_path = root / entry['file_name']
        if not color_path.exists():
            color_path = root / 'images' / entry['file_name']
        color = cv2.cvtColor(
            _read(color_path, cv2.IMREAD_COLOR, 'colour image'), cv2.COLOR_BGR2RGB
        )
        depth_path = root / entry.get('depth_file', f'depth/{Path(entry["file_name"]).stem}.png')
        depth_mm = _read(depth_path, cv2.IMREAD_UNCHANGED, 'depth image')
        if depth_mm.dtype != np.uint16 or depth_mm.shape != color.shape[:2]:
            raise InputError(
                f'{depth_path}: expected a 16-bit PNG in millimetres of size '
                f'{color.shape[1]}x{color.shape[0]}, got {depth_mm.dtype} {depth_mm.shape}'
            )
        h, w = depth_mm.shape
        camera = _camera(entry, top, root, w, h)
        depth = depth_from_millimetres(depth_mm)
        extr = entry.get('conveyor_from_camera') or top.get('conveyor_from_camera')
        belt = (
            BeltPlane.from_extrinsics(np.asarray(extr, dtype=np.float64))
            if extr is not None
            else estimate_belt_plane(depth, camera)
        )
        labels = np.zeros((h, w), dtype=np.uint16)
        class_of = {}
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
        # Larger first, so a parcel lying on a bigger one stays on top where masks overlap.
        for k, ann in enumerate(sorted(anns, key=lambda a: -a.get('area', 0)), start=1):
            labels[coco.annToMask(ann) > 0] = k
            class_of[k] = cat_class[ann['category_id']]
        yield CocoFrame(color, depth, camera, belt, labels, class_of)


def load_coco_samples(annotations: Path, spec: InputSpec, output_stride: int) -> list[Any]:
    """One Sample per annotated image (images without annotations count as empty belts)."""
    return [
        make_sample(spec, f.color, f.depth, f.camera, f.belt, f.labels, f.class_of, output_stride)
        for f in coco_frames(annotations)
    ]


def coco_arrays(
    annotations: Path, spec: InputSpec, seed: int, output_stride: int
) -> tuple[Arrays, Arrays]:
    """Train / validation split of the images (seeded, at least one validation image)."""
    samples = load_coco_samples(annotations, spec, output_stride)
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = max(1, round(len(samples) * VAL_FRACTION)) if len(samples) > 1 else 0
    val = [samples[i] for i in order[:n_val]] or samples[:1]
    train = [samples[i] for i in order[n_val:]]
    return Arrays(**stack(train)), Arrays(**stack(val))


def write_coco_dataset(frames: list[Any], out: Path) -> Path:
    """Write simulated frames in the fine-tuning layout (for tests and for trying it out).

    `frames` are RGBDFrame objects with ground truth (e.g. from BagFrameReader).
    """
    from pkg_perception.evaluation.segmentation import encode

    (out / 'images').mkdir(parents=True, exist_ok=True)
    (out / 'depth').mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for k, frame in enumerate(frames, start=1):
        name = f'frame_{k:05d}.png'
        cv2.imwrite(str(out / 'images' / name), cv2.cvtColor(frame.color, cv2.COLOR_RGB2BGR))
        mm = np.nan_to_num(frame.depth * 1000.0, nan=0.0).round().clip(0, 65535)
        cv2.imwrite(str(out / 'depth' / name), mm.astype(np.uint16))
        cam = frame.camera
        entry: dict[str, Any] = {
            'id': k,
            'file_name': f'images/{name}',
            'depth_file': f'depth/{name}',
            'width': cam.width,
            'height': cam.height,
            'camera': {'fx': cam.fx, 'fy': cam.fy, 'cx': cam.cx, 'cy': cam.cy},
        }
        if frame.transforms is not None:
            with contextlib.suppress(KeyError):
                entry['conveyor_from_camera'] = frame.transforms.lookup(
                    'conveyor', frame.frame_id
                ).tolist()
        images.append(entry)
        gt = frame.ground_truth
        for p in gt.truth.parcels:
            mask = gt.instance_ids == p.parcel_id
            if not mask.any():
                continue
            rle = encode(mask)
            anns.append(
                {
                    'id': len(anns) + 1,
                    'image_id': k,
                    'category_id': int(p.parcel_class),
                    'segmentation': rle,
                    'area': int(mask.sum()),
                    'bbox': [0, 0, 0, 0],
                    'iscrowd': 0,
                }
            )
    cats = [{'id': int(c), 'name': c.label} for c in ParcelClass]
    path = out / 'annotations.json'
    path.write_text(json.dumps({'images': images, 'annotations': anns, 'categories': cats}))
    return path
