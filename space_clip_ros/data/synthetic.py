"""Synthetic RGB-D scenes with exact metric depth, rendered by vectorised ray casting.

Two kinds of scene are generated from a seed:

* ``indoor``: a closed room (floor, ceiling, four walls) with axis-aligned furniture boxes, like
  NYU Depth v2. Every pixel hits a surface, so depth is dense.
* ``street``: a ground plane with a painted road, buildings, cars and poles on both sides and an
  open sky, like KITTI. Sky pixels (and anything beyond ``max_range``) have depth 0 = invalid.

Geometry uses the optical convention everywhere (x right, y down, z forward) for both the camera
and the world, so a camera with identity rotation looks down +z with "up" being -y. Depth is the
camera-frame z of the first surface hit at the pixel centre: with pixel ``(u, v)`` (integer
column/row) the ray is ``((u - cx) / fx, (v - cy) / fy, 1)``, which makes back-projection
``x = (u - cx) * z / fx`` of the rendered depth land exactly on the surfaces.

The renderer is pure numpy: one pass over all pixels per primitive, and boxes are only tested
inside their projected screen rectangle.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .camera import CameraIntrinsics

SceneKind = Literal["indoor", "street"]

# Texture kinds of a material (values stored in Scene.material_kind).
TEXTURE_CHECKER = 0
TEXTURE_STRIPES = 1
TEXTURE_NOISE = 2
TEXTURE_ROAD = 3

_NOISE_GRID = 32  # value-noise lattice size per material (wraps around)
_NEAR = 1e-3  # nearest visible depth in metres


# ----------------------------------------------------------------------------------------------
# Camera model


# KITTI 2011_09_26 left colour camera (P2) at the raw resolution.
KITTI_INTRINSICS = CameraIntrinsics(fx=721.5377, fy=721.5377, cx=609.5593, cy=172.854, width=1242, height=375)
# NYU Depth v2 Kinect colour camera (the values BTS and the NYU toolbox use).
NYU_INTRINSICS = CameraIntrinsics(fx=518.8579, fy=519.4696, cx=325.5824, cy=253.7362, width=640, height=480)


@dataclass(frozen=True)
class CameraPose:
    """Camera-to-world transform: ``p_world = rotation @ p_camera + position``."""

    rotation: np.ndarray
    position: np.ndarray

    @classmethod
    def from_yaw(
        cls, position: np.ndarray | tuple[float, float, float], yaw: float = 0.0, pitch: float = 0.0
    ) -> CameraPose:
        """Pose looking along +z turned by ``yaw`` (radians, positive = right, about world y) and
        ``pitch`` (radians, positive = down, about camera x)."""
        cy, sy = math.cos(yaw), math.sin(yaw)
        cp, sp = math.cos(pitch), math.sin(pitch)
        rot_yaw = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
        # Positive pitch tilts the optical axis towards +y (down).
        rot_pitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
        return cls(rotation=rot_yaw @ rot_pitch, position=np.asarray(position, dtype=np.float64))


# ----------------------------------------------------------------------------------------------
# Scenes


@dataclass
class SceneConfig:
    """What to generate. Fields left as ``None`` take the defaults of the scene kind.

    Attributes:
        kind: ``indoor`` (room) or ``street`` (road with open sky).
        seed: seed of the numpy Generator that draws everything; same config = same scene.
        n_objects: furniture boxes (indoor) or cars (street).
        length: how far the scene extends along +z in metres (room length / street length).
        camera_height: camera height above the floor / ground in metres.
        max_range: depth beyond this is reported as 0 (no return), like a range sensor.
    """

    kind: SceneKind = "indoor"
    seed: int = 0
    n_objects: int | None = None
    length: float | None = None
    camera_height: float | None = None
    max_range: float | None = None


@dataclass
class Scene:
    """A generated scene: primitives, their materials and lighting.

    Primitive ids: indoor 0..5 are the room faces (2 * axis + (1 if the +axis face)); street 0 is
    the ground plane; boxes follow, box ``i`` having id ``box_id_offset + i``.
    """

    kind: SceneKind
    camera_height: float
    max_range: float
    path_start: np.ndarray  # where the camera trajectory begins (world, metres)
    path_end: np.ndarray  # where it ends
    boxes_min: np.ndarray  # (N, 3) lower corners of axis-aligned boxes
    boxes_max: np.ndarray  # (N, 3) upper corners
    box_id_offset: int
    material_kind: np.ndarray  # (P,) texture kind per primitive
    material_colour_a: np.ndarray  # (P, 3) float RGB in [0, 1]
    material_colour_b: np.ndarray  # (P, 3)
    material_scale: np.ndarray  # (P,) texture period in metres
    material_noise: np.ndarray  # (P, G, G) value-noise lattice per primitive
    light_direction: np.ndarray  # unit vector pointing towards the light
    ambient: float
    room_min: np.ndarray | None = None  # indoor only
    room_max: np.ndarray | None = None
    ground_y: float | None = None  # street only (y is down, so ground_y > 0 below the camera)
    road_half_width: float = 0.0
    sky_horizon: np.ndarray = field(default_factory=lambda: np.array([0.80, 0.85, 0.90]))
    sky_zenith: np.ndarray = field(default_factory=lambda: np.array([0.35, 0.55, 0.85]))
    fog_distance: float = math.inf

    @property
    def n_primitives(self) -> int:
        return len(self.material_kind)


def make_scene(config: SceneConfig) -> Scene:
    """Generate the scene described by ``config`` (deterministic in ``config.seed``)."""
    rng = np.random.default_rng(config.seed)
    if config.kind == "indoor":
        return _make_indoor(config, rng)
    if config.kind == "street":
        return _make_street(config, rng)
    raise ValueError(f"unknown scene kind {config.kind!r}; expected 'indoor' or 'street'")


@dataclass
class _Material:
    """Surface look: a texture pattern blending two colours, with its period in metres."""

    kind: int
    colour_a: np.ndarray
    colour_b: np.ndarray
    scale: float
    noise: np.ndarray  # (_NOISE_GRID, _NOISE_GRID) lattice for TEXTURE_NOISE / TEXTURE_ROAD


def _random_material(
    rng: np.random.Generator, kinds: tuple[int, ...] = (TEXTURE_CHECKER, TEXTURE_STRIPES, TEXTURE_NOISE)
) -> _Material:
    colour_a = rng.uniform(0.2, 0.95, 3)
    # Second colour: a darker shade of the first or an unrelated colour, so patterns vary in contrast.
    colour_b = colour_a * rng.uniform(0.45, 0.85) if rng.random() < 0.6 else rng.uniform(0.1, 0.9, 3)
    return _Material(
        kind=int(rng.choice(kinds)),
        colour_a=colour_a,
        colour_b=colour_b,
        scale=float(rng.uniform(0.12, 0.6)),
        noise=rng.random((_NOISE_GRID, _NOISE_GRID)),
    )


def _pack_materials(materials: list[_Material]) -> dict[str, np.ndarray]:
    """Per-primitive material tables, the form the renderer indexes by primitive id."""
    return {
        "material_kind": np.array([m.kind for m in materials], dtype=np.int8),
        "material_colour_a": np.array([m.colour_a for m in materials], dtype=np.float32),
        "material_colour_b": np.array([m.colour_b for m in materials], dtype=np.float32),
        "material_scale": np.array([m.scale for m in materials], dtype=np.float32),
        "material_noise": np.array([m.noise for m in materials], dtype=np.float32),
    }


def _make_indoor(config: SceneConfig, rng: np.random.Generator) -> Scene:
    width = rng.uniform(3.5, 6.0)
    height = rng.uniform(2.5, 3.2)
    length = config.length if config.length is not None else rng.uniform(7.0, 10.0)
    cam_h = config.camera_height if config.camera_height is not None else rng.uniform(1.2, 1.6)
    n_objects = config.n_objects if config.n_objects is not None else 6
    # Camera at y = 0; floor below it at +cam_h (y down), ceiling above.
    room_min = np.array([-width / 2, cam_h - height, -1.0])
    room_max = np.array([width / 2, cam_h, length - 1.0])
    corridor = 0.8  # keep |x| < corridor free so the camera path never enters furniture

    boxes_min, boxes_max = [], []
    for _ in range(n_objects):
        side = -1.0 if rng.random() < 0.5 else 1.0
        free = width / 2 - corridor
        size_x = rng.uniform(0.3, min(1.5, free))
        size_y = rng.uniform(0.4, min(2.0, height - 0.3))
        size_z = rng.uniform(0.4, 1.5)
        x_inner = corridor + rng.uniform(0.0, free - size_x)
        x0, x1 = (x_inner, x_inner + size_x) if side > 0 else (-x_inner - size_x, -x_inner)
        z0 = rng.uniform(room_min[2] + 0.5, room_max[2] - size_z)
        boxes_min.append([x0, cam_h - size_y, z0])
        boxes_max.append([x1, cam_h, z0 + size_z])

    materials = [_random_material(rng) for _ in range(6 + n_objects)]
    return Scene(
        kind="indoor",
        camera_height=float(cam_h),
        max_range=config.max_range if config.max_range is not None else math.inf,
        path_start=np.array([0.0, 0.0, -0.5]),
        # Stop well before the end wall so the last frames still see the room, not only a wall.
        path_end=np.array([0.0, 0.0, max(-0.5, room_max[2] - 4.0)]),
        boxes_min=np.array(boxes_min, dtype=np.float64).reshape(-1, 3),
        boxes_max=np.array(boxes_max, dtype=np.float64).reshape(-1, 3),
        box_id_offset=6,
        light_direction=_unit(np.array([0.3, -1.0, -0.4])),  # from above and behind
        ambient=0.45,
        room_min=room_min,
        room_max=room_max,
        **_pack_materials(materials),
    )


def _make_street(config: SceneConfig, rng: np.random.Generator) -> Scene:
    length = config.length if config.length is not None else 120.0
    cam_h = config.camera_height if config.camera_height is not None else 1.65  # KITTI camera height
    n_cars = config.n_objects if config.n_objects is not None else 10
    road_half = rng.uniform(3.5, 5.5)
    cam_x = road_half / 2  # drive in the middle of the right half of the road
    ground_y = cam_h

    boxes_min, boxes_max, materials = [], [], []

    def add_box(lo: list[float], hi: list[float], material: _Material) -> None:
        boxes_min.append(lo)
        boxes_max.append(hi)
        materials.append(material)

    # Buildings on both sides, in blocks with gaps, from behind the start to beyond the end.
    for side in (-1.0, 1.0):
        z = -20.0
        while z < length + 40.0:
            block = rng.uniform(8.0, 24.0)
            x_near = road_half + rng.uniform(2.0, 4.0) + rng.uniform(0.0, 3.0)
            x_far = x_near + rng.uniform(6.0, 12.0)
            top = ground_y - rng.uniform(4.0, 15.0)
            x0, x1 = (x_near, x_far) if side > 0 else (-x_far, -x_near)
            add_box(
                [x0, top, z],
                [x1, ground_y, z + block],
                _random_material(rng, (TEXTURE_CHECKER, TEXTURE_STRIPES, TEXTURE_NOISE)),
            )
            z += block + rng.uniform(0.0, 6.0)
    # Poles along the kerbs: thin tall structures, good for depth edges.
    for side in (-1.0, 1.0):
        for z in np.arange(rng.uniform(0.0, 15.0), length + 30.0, rng.uniform(12.0, 20.0)):
            x = side * (road_half + 0.6)
            add_box(
                [x - 0.1, ground_y - 5.0, z - 0.1],
                [x + 0.1, ground_y, z + 0.1],
                dataclasses.replace(
                    _random_material(rng, (TEXTURE_NOISE,)),
                    colour_a=np.array([0.45, 0.45, 0.45]),
                    colour_b=np.array([0.3, 0.3, 0.3]),
                ),
            )
    # Cars: parked at both kerbs or in the oncoming lane, never in the ego lane.
    for _ in range(n_cars):
        # Lane: parked at the left kerb, parked at the right kerb, or driving in the oncoming lane.
        x_centre = rng.choice([-road_half + 1.1, road_half - 1.1, -road_half / 2])
        car_w, car_h, car_l = rng.uniform(1.6, 1.9), rng.uniform(1.4, 1.8), rng.uniform(3.8, 4.8)
        if abs(x_centre - cam_x) < car_w / 2 + 0.9:
            continue  # road too narrow: this car would block the ego lane
        z0 = rng.uniform(3.0, length)
        add_box(
            [x_centre - car_w / 2, ground_y - car_h, z0],
            [x_centre + car_w / 2, ground_y, z0 + car_l],
            dataclasses.replace(
                _random_material(rng, (TEXTURE_NOISE, TEXTURE_STRIPES)), scale=float(rng.uniform(0.3, 0.8))
            ),
        )

    ground = _Material(
        kind=TEXTURE_ROAD,
        colour_a=rng.uniform(0.25, 0.38) * np.ones(3),  # asphalt
        colour_b=np.array([0.62, 0.6, 0.55]) * rng.uniform(0.85, 1.1),  # pavement
        scale=1.0,
        noise=rng.random((_NOISE_GRID, _NOISE_GRID)),
    )
    return Scene(
        kind="street",
        camera_height=float(cam_h),
        max_range=config.max_range if config.max_range is not None else 80.0,
        path_start=np.array([cam_x, 0.0, 0.0]),
        path_end=np.array([cam_x, 0.0, length * 0.6]),
        boxes_min=np.array(boxes_min, dtype=np.float64).reshape(-1, 3),
        boxes_max=np.array(boxes_max, dtype=np.float64).reshape(-1, 3),
        box_id_offset=1,
        light_direction=_unit(np.array([-0.4, -1.0, 0.3])),
        ambient=0.5,
        ground_y=float(ground_y),
        road_half_width=float(road_half),
        fog_distance=180.0,
        **_pack_materials([ground, *materials]),
    )


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# ----------------------------------------------------------------------------------------------
# Trajectory


def trajectory(
    scene: Scene,
    n_frames: int,
    yaw_amplitude_deg: float = 4.0,
    yaw_cycles: float = 1.0,
    pitch_deg: float = 0.0,
) -> list[CameraPose]:
    """``n_frames`` poses moving smoothly forward through ``scene`` with a slight sinusoidal yaw.

    The whole path lies inside the free space of the scene (the camera never enters a box), so any
    ``n_frames`` can be rendered; more frames means smaller steps.
    """
    if n_frames < 1:
        raise ValueError("n_frames must be at least 1")
    poses = []
    for k in range(n_frames):
        s = k / max(n_frames - 1, 1)
        # Smooth start and stop (zero velocity at both ends) keeps motion natural for a stream.
        s_eased = 0.5 - 0.5 * math.cos(math.pi * s)
        position = scene.path_start + s_eased * (scene.path_end - scene.path_start)
        yaw = math.radians(yaw_amplitude_deg) * math.sin(2.0 * math.pi * yaw_cycles * s)
        poses.append(CameraPose.from_yaw(position, yaw=yaw, pitch=math.radians(pitch_deg)))
    return poses


# ----------------------------------------------------------------------------------------------
# Rendering


@dataclass
class _Hits:
    """Per-pixel nearest hit so far (the z-buffer of the ray caster)."""

    depth: np.ndarray  # (H, W) float32, inf = nothing hit
    primitive: np.ndarray  # (H, W) int16, -1 = nothing hit
    axis: np.ndarray  # (H, W) int8, axis of the face normal


def render(scene: Scene, pose: CameraPose, intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Render one view.

    Returns:
        rgb: uint8 (H, W, 3) image.
        depth: float32 (H, W) camera-frame z in metres; 0 where nothing is hit within
            ``scene.max_range`` (sky, far field).
    """
    height, width = intrinsics.height, intrinsics.width
    rot = np.asarray(pose.rotation, dtype=np.float64)
    origin = np.asarray(pose.position, dtype=np.float64)
    xs = ((np.arange(width) - intrinsics.cx) / intrinsics.fx).astype(np.float32)
    ys = ((np.arange(height) - intrinsics.cy) / intrinsics.fy).astype(np.float32)
    # World ray direction d = R @ (x, y, 1) with camera z = 1, so the ray parameter t *is* the depth.
    dirs = [
        (np.float32(rot[k, 0]) * xs[None, :] + np.float32(rot[k, 1]) * ys[:, None] + np.float32(rot[k, 2]))
        for k in range(3)
    ]
    with np.errstate(divide="ignore"):
        inv_dirs = [np.float32(1.0) / d for d in dirs]

    hits = _Hits(
        depth=np.full((height, width), np.inf, dtype=np.float32),
        primitive=np.full((height, width), -1, dtype=np.int16),
        axis=np.zeros((height, width), dtype=np.int8),
    )
    with np.errstate(invalid="ignore", over="ignore"):
        if scene.room_min is not None:
            _hit_room_interior(scene, origin, dirs, inv_dirs, hits)
        if scene.ground_y is not None:
            _hit_ground(scene, origin, dirs, hits)
        for i, rect in enumerate(_screen_rects(scene, rot, origin, intrinsics)):
            if rect is not None:
                _hit_box(
                    i + scene.box_id_offset,
                    scene.boxes_min[i],
                    scene.boxes_max[i],
                    origin,
                    dirs,
                    inv_dirs,
                    rect,
                    hits,
                )

    rgb = _shade(scene, origin, dirs, hits)
    valid = np.isfinite(hits.depth) & (hits.depth <= scene.max_range)
    depth = np.where(valid, hits.depth, np.float32(0.0)).astype(np.float32)
    return rgb, depth


def _hit_room_interior(
    scene: Scene, origin: np.ndarray, dirs: list[np.ndarray], inv_dirs: list[np.ndarray], hits: _Hits
) -> None:
    # From inside a box, the exit distance along each axis is the larger of the two slab distances.
    best = hits.depth
    for axis in range(3):
        t_lo = np.float32(scene.room_min[axis] - origin[axis]) * inv_dirs[axis]
        t_hi = np.float32(scene.room_max[axis] - origin[axis]) * inv_dirs[axis]
        t_exit = np.maximum(t_lo, t_hi)
        closer = t_exit < best
        best = np.where(closer, t_exit, best)
        face = (2 * axis + (dirs[axis] > 0)).astype(np.int16)
        hits.primitive = np.where(closer, face, hits.primitive)
        hits.axis = np.where(closer, np.int8(axis), hits.axis)
    hits.depth = best


def _hit_ground(scene: Scene, origin: np.ndarray, dirs: list[np.ndarray], hits: _Hits) -> None:
    drop = np.float32(scene.ground_y - origin[1])
    t = np.where(dirs[1] > 0, drop / dirs[1], np.float32(np.inf))
    closer = (t > _NEAR) & (t < hits.depth)
    hits.depth = np.where(closer, t, hits.depth)
    hits.primitive = np.where(closer, np.int16(0), hits.primitive)
    hits.axis = np.where(closer, np.int8(1), hits.axis)


# Corner k of a box takes max along axis a when bit a of k is set; edges join corners one bit apart.
_CORNER_BITS = np.array([[(k >> a) & 1 for a in range(3)] for k in range(8)], dtype=bool)
_BOX_EDGES = np.array([(k, k | bit) for k in range(8) for bit in (1, 2, 4) if not k & bit])


def _screen_rects(
    scene: Scene, rot: np.ndarray, origin: np.ndarray, intrinsics: CameraIntrinsics
) -> list[tuple[int, int, int, int] | None]:
    """Per box, the pixel rectangle (row0, row1, col0, col1) containing its image, or None if unseen.

    Boxes are clipped to the near plane, so boxes that pass beside or behind the camera get a tight
    rectangle instead of a full-frame test. All boxes are projected at once.
    """
    if len(scene.boxes_min) == 0:
        return []
    corners = np.where(_CORNER_BITS[None], scene.boxes_max[:, None, :], scene.boxes_min[:, None, :])
    cam = (corners - origin) @ rot  # (N, 8, 3) camera coordinates R^T (p - o)
    z = cam[..., 2] - _NEAR
    # Where a box edge crosses the near plane, the crossing point bounds the visible part too.
    za, zb = z[:, _BOX_EDGES[:, 0]], z[:, _BOX_EDGES[:, 1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(za * zb < 0, za / (za - zb), np.nan)
    crossing = cam[:, _BOX_EDGES[:, 0]] + frac[..., None] * (
        cam[:, _BOX_EDGES[:, 1]] - cam[:, _BOX_EDGES[:, 0]]
    )
    points = np.concatenate([np.where((z > 0)[..., None], cam, np.nan), crossing], axis=1)  # (N, 20, 3)
    depth = np.maximum(points[..., 2], _NEAR)
    u = intrinsics.fx * points[..., 0] / depth + intrinsics.cx
    v = intrinsics.fy * points[..., 1] / depth + intrinsics.cy
    seen = ~np.all(np.isnan(u), axis=1)
    with np.errstate(invalid="ignore"):
        u_lo, u_hi = (
            np.nanmin(np.where(seen[:, None], u, 0.0), 1),
            np.nanmax(np.where(seen[:, None], u, 0.0), 1),
        )
        v_lo, v_hi = (
            np.nanmin(np.where(seen[:, None], v, 0.0), 1),
            np.nanmax(np.where(seen[:, None], v, 0.0), 1),
        )
    # Clamp before converting to int: near-plane points may project extremely far off screen.
    col0 = np.clip(np.floor(u_lo), 0, intrinsics.width).astype(int)
    col1 = np.clip(np.ceil(u_hi) + 1, 0, intrinsics.width).astype(int)
    row0 = np.clip(np.floor(v_lo), 0, intrinsics.height).astype(int)
    row1 = np.clip(np.ceil(v_hi) + 1, 0, intrinsics.height).astype(int)
    visible = seen & (col0 < col1) & (row0 < row1)
    return [
        (int(row0[i]), int(row1[i]), int(col0[i]), int(col1[i])) if visible[i] else None
        for i in range(len(visible))
    ]


def _hit_box(
    primitive: int,
    box_min: np.ndarray,
    box_max: np.ndarray,
    origin: np.ndarray,
    dirs: list[np.ndarray],
    inv_dirs: list[np.ndarray],
    rect: tuple[int, int, int, int],
    hits: _Hits,
) -> None:
    r0, r1, c0, c1 = rect
    window = (slice(r0, r1), slice(c0, c1))
    near, far = [], []
    for axis in range(3):
        inv = inv_dirs[axis][window]
        t_lo = np.float32(box_min[axis] - origin[axis]) * inv
        t_hi = np.float32(box_max[axis] - origin[axis]) * inv
        near.append(np.minimum(t_lo, t_hi))
        far.append(np.maximum(t_lo, t_hi))
    t_near = np.maximum(np.maximum(near[0], near[1]), near[2])
    t_far = np.minimum(np.minimum(far[0], far[1]), far[2])
    best = hits.depth[window]
    hit = (t_near <= t_far) & (t_near > _NEAR) & (t_near < best)
    if not hit.any():
        return
    # The entry face is the axis whose slab was entered last.
    axis = np.where((near[0] >= near[1]) & (near[0] >= near[2]), 0, np.where(near[1] >= near[2], 1, 2))
    hits.depth[window] = np.where(hit, t_near, best)
    hits.primitive[window] = np.where(hit, np.int16(primitive), hits.primitive[window])
    hits.axis[window] = np.where(hit, axis.astype(np.int8), hits.axis[window])


def _shade(scene: Scene, origin: np.ndarray, dirs: list[np.ndarray], hits: _Hits) -> np.ndarray:
    height, width = hits.depth.shape
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    mask = hits.primitive >= 0
    everywhere = bool(mask.all())
    if not everywhere:
        # Sky only where nothing was hit: computing it for the whole frame would double the cost.
        sky = ~mask
        rgb[sky] = _to_uint8(_sky(scene, [d[sky] for d in dirs]))
    if not mask.any():
        return rgb

    def hit_values(a: np.ndarray) -> np.ndarray:
        # A room covers every pixel: a reshape is much cheaper than boolean indexing.
        return a.reshape(-1) if everywhere else a[mask]

    t = hit_values(hits.depth)
    prim = hit_values(hits.primitive).astype(np.intp)
    axis = hit_values(hits.axis)
    dx, dy, dz = (hit_values(d) for d in dirs)
    px = np.float32(origin[0]) + t * dx
    py = np.float32(origin[1]) + t * dy
    pz = np.float32(origin[2]) + t * dz
    # Texture coordinates: the two world axes spanning the face (x-faces: z, y; y-faces: x, z; z-faces: x, y).
    s_coord = np.where(axis == 0, pz, px)
    r_coord = np.where(axis == 1, pz, py)

    pattern = _pattern(scene, prim, s_coord, r_coord, px, pz)
    # Fine grain on every surface: gives texture at all scales (a cue the network can use).
    grain = _hash_noise(np.floor(s_coord * np.float32(25.0)), np.floor(r_coord * np.float32(25.0)), prim)
    # Lambertian term with the front-facing normal n = -sign(d_axis) e_axis.
    d_axis = np.where(axis == 0, dx, np.where(axis == 1, dy, dz))
    light = np.take(scene.light_direction.astype(np.float32), axis)
    n_dot_l = np.clip(np.where(d_axis < 0, light, -light), 0.0, 1.0)
    factor = (np.float32(0.92) + np.float32(0.16) * grain) * (
        np.float32(scene.ambient) + np.float32(1.0 - scene.ambient) * n_dot_l
    )
    fog = None
    if math.isfinite(scene.fog_distance):
        fog = 1.0 - np.exp(-t / np.float32(scene.fog_distance))
        factor *= 1.0 - fog

    for c in range(3):
        colour_a = np.take(scene.material_colour_a[:, c], prim)
        colour_b = np.take(scene.material_colour_b[:, c], prim)
        channel = (colour_a + (colour_b - colour_a) * pattern) * factor
        if fog is not None:
            channel += np.float32(scene.sky_horizon[c]) * fog
        plane = rgb[..., c]  # a view: assigning into it fills rgb
        if everywhere:
            plane[...] = _to_uint8(channel).reshape(height, width)
        else:
            plane[mask] = _to_uint8(channel)
    return rgb


def _pattern(
    scene: Scene, prim: np.ndarray, s: np.ndarray, r: np.ndarray, px: np.ndarray, pz: np.ndarray
) -> np.ndarray:
    """Texture value per hit pixel: 0 = colour a, 1 = colour b (road markings go beyond 1)."""
    inv_scale = np.take(np.float32(1.0) / scene.material_scale, prim)
    pattern = np.empty(len(prim), dtype=np.float32)
    # Texture kinds of the primitives in view (bincount is much cheaper than a per-pixel unique).
    in_view = np.bincount(prim, minlength=scene.n_primitives) > 0
    textures = np.unique(scene.material_kind[in_view])
    kind = np.take(scene.material_kind, prim) if len(textures) > 1 else None
    for texture in textures:
        # One texture kind only (e.g. a room of checkerboards): a full slice avoids mask copies.
        sel = slice(None) if len(textures) == 1 else kind == texture
        if texture == TEXTURE_ROAD:
            pattern[sel] = _road_pattern(scene, prim[sel], px[sel], pz[sel])
            continue
        s_scaled = s[sel] * inv_scale[sel]
        r_scaled = r[sel] * inv_scale[sel]
        if texture == TEXTURE_CHECKER:
            pattern[sel] = (np.floor(s_scaled) + np.floor(r_scaled)) % 2
        elif texture == TEXTURE_STRIPES:
            pattern[sel] = np.float32(0.8) * (np.floor(s_scaled) % 2)
        else:
            pattern[sel] = _value_noise(scene.material_noise, prim[sel], s_scaled, r_scaled)
    return pattern


def _road_pattern(scene: Scene, prim: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Asphalt with noise, pavement beyond the kerbs, dashed centre line and solid edge lines."""
    value = np.float32(0.35) * _value_noise(
        scene.material_noise, prim, x * np.float32(1.4), z * np.float32(1.4)
    )
    abs_x = np.abs(x)
    value[abs_x > scene.road_half_width] = 1.0
    # Markings: extrapolating past colour b (pavement grey) towards white.
    centre = (abs_x < 0.08) & ((z % 6.0) < 3.0)
    edge = np.abs(abs_x - (scene.road_half_width - 0.3)) < 0.08
    value[centre | edge] = 1.6
    return value


def _value_noise(grids: np.ndarray, prim: np.ndarray, s: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Bilinearly interpolated lattice noise, wrapping every ``_NOISE_GRID`` cells."""
    s0 = np.floor(s)
    r0 = np.floor(r)
    fs = s - s0
    fr = r - r0
    wrap = _NOISE_GRID - 1  # the grid size is a power of two: & wraps like a modulo
    i0 = s0.astype(np.int32) & wrap
    j0 = r0.astype(np.int32) & wrap
    i1 = (i0 + 1) & wrap
    j1 = (j0 + 1) & wrap
    flat = grids.reshape(-1)
    base = prim.astype(np.int32) * (_NOISE_GRID * _NOISE_GRID)
    row0 = base + j0 * _NOISE_GRID
    row1 = base + j1 * _NOISE_GRID
    top = np.take(flat, row0 + i0) * (1 - fs) + np.take(flat, row0 + i1) * fs
    bottom = np.take(flat, row1 + i0) * (1 - fs) + np.take(flat, row1 + i1) * fs
    return top * (1 - fr) + bottom * fr


def _hash_noise(i: np.ndarray, j: np.ndarray, prim: np.ndarray) -> np.ndarray:
    """Per-cell pseudo-random value in [0, 1] from integer cell coordinates (no lattice storage)."""
    # uint32 arithmetic wraps silently, which is what a hash wants.
    h = (
        (i.astype(np.int32).view(np.uint32) * np.uint32(73856093))
        ^ (j.astype(np.int32).view(np.uint32) * np.uint32(19349663))
        ^ (prim.astype(np.uint32) * np.uint32(83492791))
    )
    h ^= h >> np.uint32(13)
    h *= np.uint32(1274126177)
    return (h >> np.uint32(16)).astype(np.float32) * np.float32(1.0 / 65535.0)


def _sky(scene: Scene, dirs: list[np.ndarray]) -> np.ndarray:
    """Sky colour (..., 3) for ray directions: horizon colour blending to zenith colour upwards."""
    norm = np.sqrt(dirs[0] ** 2 + dirs[1] ** 2 + dirs[2] ** 2)
    elevation = -dirs[1] / norm  # y is down, so looking up means negative y
    blend = np.clip(elevation * 2.5, 0.0, 1.0)[..., None]
    horizon = scene.sky_horizon.astype(np.float32)
    zenith = scene.sky_zenith.astype(np.float32)
    return horizon * (1.0 - blend) + zenith * blend


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Streaming


@dataclass
class SyntheticFrame:
    """One rendered frame of a sequence."""

    index: int
    rgb: np.ndarray
    depth: np.ndarray
    pose: CameraPose


def render_sequence(
    scene: Scene, intrinsics: CameraIntrinsics, n_frames: int, **trajectory_kwargs
) -> Iterator[SyntheticFrame]:
    """Render the frames of ``trajectory(scene, n_frames)`` one by one (for simulators and writers)."""
    for index, pose in enumerate(trajectory(scene, n_frames, **trajectory_kwargs)):
        rgb, depth = render(scene, pose, intrinsics)
        yield SyntheticFrame(index=index, rgb=rgb, depth=depth, pose=pose)
