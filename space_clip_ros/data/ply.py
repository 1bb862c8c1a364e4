"""Writing and reading coloured point sets as PLY files (Stanford polygon format, vertices only).

The writer emits ``element vertex`` with float x, y, z and, when colours are given, uchar red,
green, blue, in ``binary_little_endian 1.0`` or ``ascii 1.0``. The reader accepts those files and
any PLY whose vertex element has scalar x, y, z (and optionally red, green, blue) properties,
skipping elements written before the vertices as long as they have no list properties.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_log = logging.getLogger(__name__)

# PLY scalar type names (both spellings of the spec) -> numpy type without byte order.
_PLY_TYPES = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}
_FORMAT_BYTE_ORDER = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": "<"}


def write_ply(
    path: str | Path, points: np.ndarray, colors: np.ndarray | None = None, binary: bool = True
) -> int:
    """Write the finite rows of ``points`` (N, 3) (and their ``colors`` (N, 3) uint8 RGB) to ``path``.

    Returns the number of vertices written.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be an (N, 3) array, got shape {points.shape}")
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != points.shape or colors.dtype != np.uint8:
            raise ValueError(
                f"colors must be an {points.shape} uint8 array matching points, "
                f"got shape {colors.shape} dtype {colors.dtype}"
            )
    finite = np.isfinite(points).all(axis=1)
    points = points[finite]
    colors = colors[finite] if colors is not None else None

    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(len(points), dtype=fields)
    for axis, name in enumerate("xyz"):
        vertices[name] = points[:, axis]
    if colors is not None:
        for channel, name in enumerate(("red", "green", "blue")):
            vertices[name] = colors[:, channel]

    header_lines = [
        "ply",
        f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
        "comment written by space_clip_ros",
        f"element vertex {len(vertices)}",
        "property float x",
        "property float y",
        "property float z",
    ]
    if colors is not None:
        header_lines += ["property uchar red", "property uchar green", "property uchar blue"]
    header_lines.append("end_header")
    header = ("\n".join(header_lines) + "\n").encode("ascii")

    with open(path, "wb") as stream:
        stream.write(header)
        if binary:
            stream.write(vertices.tobytes())
        else:
            # %.9g keeps every float32 exact on the way back.
            row_format = " ".join(["%.9g"] * 3 + (["%d"] * 3 if colors is not None else []))
            table = np.column_stack(
                [points.astype(np.float64)] + ([colors.astype(np.float64)] if colors is not None else [])
            )
            np.savetxt(stream, table, fmt=row_format)
    _log.debug("wrote %d vertices to %s", len(vertices), path)
    return len(vertices)


@dataclass
class _Element:
    name: str
    count: int
    properties: list[tuple[str, str]]  # (name, PLY type); list properties have type "list"


def _parse_header(stream) -> tuple[str, list[_Element]]:
    if stream.readline().strip() != b"ply":
        raise ValueError("not a PLY file: the first line is not 'ply'")
    file_format = None
    elements: list[_Element] = []
    while True:
        line = stream.readline()
        if not line:
            raise ValueError("PLY header has no 'end_header' line")
        words = line.decode("ascii").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format":
            file_format = words[1]
            if file_format not in _FORMAT_BYTE_ORDER:
                raise ValueError(f"unsupported PLY format '{file_format}'")
        elif words[0] == "element":
            elements.append(_Element(words[1], int(words[2]), []))
        elif words[0] == "property":
            if not elements:
                raise ValueError("PLY property declared before any element")
            if words[1] == "list":
                elements[-1].properties.append((words[-1], "list"))
            elif words[1] in _PLY_TYPES:
                elements[-1].properties.append((words[2], words[1]))
            else:
                raise ValueError(f"unknown PLY property type '{words[1]}'")
    if file_format is None:
        raise ValueError("PLY header has no 'format' line")
    return file_format, elements


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the vertices of a PLY file: ((N, 3) float32 points, (N, 3) uint8 RGB colours or None)."""
    with open(path, "rb") as stream:
        file_format, elements = _parse_header(stream)
        byte_order = _FORMAT_BYTE_ORDER[file_format]
        for element in elements:
            names = [name for name, _ in element.properties]
            if element.name != "vertex":
                if any(kind == "list" for _, kind in element.properties):
                    raise ValueError(
                        f"cannot skip PLY element '{element.name}' with list properties before the vertices"
                    )
                if file_format == "ascii":
                    for _ in range(element.count):
                        stream.readline()
                else:
                    itemsize = sum(np.dtype(_PLY_TYPES[kind]).itemsize for _, kind in element.properties)
                    stream.seek(element.count * itemsize, 1)
                continue
            if any(kind == "list" for _, kind in element.properties):
                raise ValueError("PLY vertex element has list properties; expected scalars only")
            missing = [name for name in "xyz" if name not in names]
            if missing:
                raise ValueError(f"PLY vertices have no {missing} properties")
            dtype = np.dtype([(name, byte_order + _PLY_TYPES[kind]) for name, kind in element.properties])
            if file_format == "ascii":
                table = np.loadtxt(stream, max_rows=element.count, ndmin=2) if element.count else None
                vertices = np.zeros(element.count, dtype=dtype)
                for column, name in enumerate(names):
                    if table is not None:
                        vertices[name] = table[:, column]
            else:
                raw = stream.read(element.count * dtype.itemsize)
                if len(raw) < element.count * dtype.itemsize:
                    raise ValueError(
                        f"PLY file ends after {len(raw)} bytes of vertex data; "
                        f"expected {element.count * dtype.itemsize}"
                    )
                vertices = np.frombuffer(raw, dtype=dtype)
            points = np.stack([vertices[name] for name in "xyz"], axis=1).astype(np.float32)
            colors = None
            if all(name in names for name in ("red", "green", "blue")):
                colors = np.stack([vertices[name] for name in ("red", "green", "blue")], axis=1)
                colors = colors.astype(np.uint8)
            return points, colors
    raise ValueError(f"PLY file {path} has no vertex element")
