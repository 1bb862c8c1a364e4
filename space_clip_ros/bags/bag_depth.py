"""Add depth to a recorded bag: the pipeline behind ``space-clip-bag``.

Two passes over the input. The first collects the CameraInfo messages (small) so that every
image finds its calibration, whether the driver logged it just before or just after the image.
The second copies every message unchanged and collects the images of the chosen topic into
batches; each batch goes through the predictor in one call and, per image, every output the
options ask for (the depth node's output topics, ``outputs.topics.OUTPUT_TOPICS``: depth image,
its CameraInfo with K scaled to the depth map, point cloud, confidence, colour picture,
embeddings) is written under the image's namespace with the image's header stamp and the
image's log time. Writing out of log-time order is fine: MCAP and SQLite3 readers order messages
by log time. An output topic is created with its first message, so a run without CameraInfo has
no empty depth/camera_info or points topic.

With ``scale_anchor: sparse_points`` the metric anchor points come from a PointCloud2 topic of the
bag (``<namespace>/anchor_points`` by default, in the camera's optical frame): each image uses
the newest anchor cloud logged before it that no earlier image used, as the node uses the newest
cloud it received.

Per frame the outputs are what the depth node publishes for the same frame with the same output
options: they are built by the node's own output step
(:class:`~space_clip_ros.outputs.builder.DepthOutputBuilder`: focal rescaling, [min_depth,
max_depth] validity, messages) from :class:`~space_clip_ros.outputs.options.OutputOptions`. A
damaged input is read up to the damage; the batch in hand is finished and the output bag closed
properly.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rosbags.interfaces import Connection
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from tqdm import tqdm

from space_clip_ros.bags import cdr
from space_clip_ros.bags.reading import BagSource
from space_clip_ros.bags.writing import BagSink, typestore_for
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.msgs import CameraInfoError
from space_clip_ros.msgs.header import stamp_ns
from space_clip_ros.msgs.pointcloud import PointCloudError
from space_clip_ros.outputs.anchoring import DepthScaleAnchor
from space_clip_ros.outputs.builder import DepthOutputBuilder
from space_clip_ros.outputs.calibration import CameraCalibration
from space_clip_ros.outputs.messages import decode_image
from space_clip_ros.outputs.options import OptionValue, OutputOptions
from space_clip_ros.outputs.scale_anchor import sparse_points_from_cloud
from space_clip_ros.outputs.topics import DEPTH_CAMERA_INFO, DEPTH_IMAGE, OUTPUT_TOPICS, POINTS

if TYPE_CHECKING:
    from space_clip_ros.model import CheckpointRecord

logger = logging.getLogger(__name__)

IMAGE_TYPES = (cdr.IMAGE_TYPE, cdr.COMPRESSED_IMAGE_TYPE)


class BagDepthError(ValueError):
    """The bag or the options do not allow the job (wrong topic, name clash...); says why."""


@dataclass(frozen=True)
class BagDepthOptions:
    """What to read and what to write. Topics left as None follow the image topic's namespace.

    Attributes:
        image_topic: sensor_msgs/Image or CompressedImage topic to run the model on.
        camera_info_topic: its CameraInfo; None: ``<namespace>/camera_info`` when the bag has it.
        depth_topic, depth_info_topic, points_topic: output topics; None: ``<namespace>/depth/image``,
            ``<namespace>/depth/camera_info``, ``<namespace>/points`` (the depth node's names). The
            other outputs are always ``<namespace>/<the node's topic name>``.
        anchor_points_topic: PointCloud2 topic of metric anchor points for ``scale_anchor:
            sparse_points``; None: ``<namespace>/anchor_points``.
        batch_size: images per predictor call.
        outputs: output options given (:class:`~space_clip_ros.outputs.options.OutputOptions` field
            names, the depth node's parameter names): the others take OutputOptions' defaults, and
            ``min_depth`` / ``max_depth`` the checkpoint's training range (see :meth:`output_options`).
        storage: ``mcap`` or ``sqlite3`` for the output; None: the input's.
        overwrite: replace an existing output bag.
        progress: show a progress bar.
    """

    image_topic: str
    camera_info_topic: str | None = None
    depth_topic: str | None = None
    depth_info_topic: str | None = None
    points_topic: str | None = None
    anchor_points_topic: str | None = None
    batch_size: int = 4
    outputs: Mapping[str, OptionValue] = field(default_factory=dict)
    storage: str | None = None
    overwrite: bool = False
    progress: bool = True

    def output_options(self, record: CheckpointRecord | None) -> OutputOptions:
        """The outputs' options for a decoder trained as ``record`` says (None: no checkpoint):
        the depth range it was trained for unless given, everything else as given or by default."""
        trained = {} if record is None else {"min_depth": record.min_depth, "max_depth": record.max_depth}
        return OutputOptions.from_values({**trained, **self.outputs})


@dataclass(frozen=True)
class TopicPlan:
    """Resolved input and output topic names (``outputs``: DepthOutputs field -> topic, for
    every output the options ask for)."""

    image: str
    image_type: str
    camera_info: str | None
    depth: str
    depth_info: str
    points: str
    outputs: dict[str, str] = field(default_factory=dict)
    anchor_points: str | None = None


@dataclass
class BagDepthReport:
    """What a run read and wrote."""

    input_path: Path
    output_path: Path
    topics: TopicPlan | None = None
    messages_read: int = 0
    messages_expected: int | None = None
    messages_written: int = 0
    images: int = 0
    depth_images: int = 0
    depth_camera_infos: int = 0
    point_clouds: int = 0
    written: dict[str, int] = field(default_factory=dict)  # output topic -> messages written
    anchor_clouds: int = 0
    images_failed: int = 0
    images_without_camera_info: int = 0
    damage: str | None = None
    salvaged: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def input_damaged(self) -> bool:
        return self.damage is not None

    def summary_lines(self) -> list[str]:
        expected = f" of {self.messages_expected}" if self.messages_expected is not None else ""
        lines = [
            f"input            {self.input_path}",
            f"output           {self.output_path}",
            f"messages         {self.messages_read}{expected} read, {self.messages_written} written",
            f"images           {self.images} on {self.topics.image if self.topics else '?'}"
            + (f" ({self.images_failed} could not be decoded)" if self.images_failed else ""),
            f"depth images     {self.depth_images} -> {self.topics.depth if self.topics else '?'}",
            f"depth info       {self.depth_camera_infos} -> {self.topics.depth_info if self.topics else '?'}",
            f"point clouds     {self.point_clouds} -> {self.topics.points if self.topics else '?'}",
        ]
        shown = {self.topics.depth, self.topics.depth_info, self.topics.points} if self.topics else set()
        lines += [f"{'written':16s} {count} -> {topic}" for topic, count in self.written.items() if topic not in shown]
        if self.topics and self.topics.anchor_points:
            lines.append(f"anchor clouds    {self.anchor_clouds} on {self.topics.anchor_points}")
        lines.append(f"time             {self.seconds:.1f} s")
        if self.images_without_camera_info:
            lines.append(f"no camera info   {self.images_without_camera_info} image(s): depth image only")
        return lines


def image_namespace(image_topic: str) -> str:
    """``/cam/color`` for ``/cam/color/image_raw`` (and for ``/cam/color/image_raw/compressed``)."""
    base = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    return base.rsplit("/", 1)[0]


def plan_topics(options: BagDepthOptions, topic_types: dict[str, str]) -> TopicPlan:
    """Resolve topic names against the bag's topics; raises :class:`BagDepthError` with the fix."""
    image_type = topic_types.get(options.image_topic)
    image_topics = sorted(t for t, kind in topic_types.items() if kind in IMAGE_TYPES)
    if image_type is None:
        raise BagDepthError(
            f"topic {options.image_topic} is not in the bag; its image topics are: "
            f"{', '.join(image_topics) or 'none'}"
        )
    if image_type not in IMAGE_TYPES:
        raise BagDepthError(
            f"topic {options.image_topic} carries {image_type}, not sensor_msgs/Image or CompressedImage; "
            f"image topics in the bag: {', '.join(image_topics) or 'none'}"
        )
    namespace = image_namespace(options.image_topic)
    camera_info = options.camera_info_topic
    if camera_info is None:
        candidate = f"{namespace}/camera_info"
        camera_info = candidate if topic_types.get(candidate) == cdr.CAMERA_INFO_TYPE else None
        if camera_info is None:
            logger.warning("no %s in the bag (use --camera-info-topic): writing depth images only, no depth "
                           "camera info, no point clouds, no focal rescaling", candidate)
    elif topic_types.get(camera_info) != cdr.CAMERA_INFO_TYPE:
        raise BagDepthError(
            f"camera info topic {camera_info} is not a sensor_msgs/CameraInfo topic of the bag; CameraInfo "
            f"topics: {', '.join(sorted(t for t, k in topic_types.items() if k == cdr.CAMERA_INFO_TYPE)) or 'none'}"
        )
    output_options = options.output_options(None)
    chosen = {DEPTH_IMAGE: options.depth_topic, DEPTH_CAMERA_INFO: options.depth_info_topic,
              POINTS: options.points_topic}
    names = {topic.name: chosen.get(topic.name) or f"{namespace}/{topic.name}" for topic in OUTPUT_TOPICS}
    anchor_points = None
    if output_options.scale_anchor == "sparse_points":
        anchor_points = options.anchor_points_topic or f"{namespace}/anchor_points"
        if topic_types.get(anchor_points) != cdr.POINT_CLOUD_TYPE:
            clouds = sorted(t for t, k in topic_types.items() if k == cdr.POINT_CLOUD_TYPE)
            raise BagDepthError(
                f"scale_anchor sparse_points needs a PointCloud2 topic of anchor points; {anchor_points} is not one "
                f"in the bag (give --anchor-points-topic; PointCloud2 topics: {', '.join(clouds) or 'none'})"
            )
    plan = TopicPlan(
        image=options.image_topic,
        image_type=image_type,
        camera_info=camera_info,
        depth=names[DEPTH_IMAGE],
        depth_info=names[DEPTH_CAMERA_INFO],
        points=names[POINTS],
        outputs={t.field: names[t.name] for t in OUTPUT_TOPICS if t.asked_for(output_options)},
        anchor_points=anchor_points,
    )
    outputs = list(plan.outputs.values())
    clashes = [t for t in outputs if t in topic_types]
    if clashes or len(set(outputs)) != len(outputs):
        raise BagDepthError(
            f"output topic(s) {', '.join(clashes) or outputs} already exist in the bag or repeat; "
            "pick others with --depth-topic / --depth-info-topic / --points-topic"
        )
    return plan


class CameraInfoIndex:
    """CameraInfo messages of a bag, found for an image by equal stamp, else nearest log time."""

    def __init__(self) -> None:
        self._by_stamp: dict[int, CameraInfo] = {}
        self._log_times: list[int] = []
        self._infos: list[CameraInfo] = []

    def __len__(self) -> int:
        return len(self._infos)

    def add(self, info: CameraInfo, log_time_ns: int) -> None:
        self._by_stamp[stamp_ns(info.header.stamp)] = info
        position = bisect.bisect(self._log_times, log_time_ns)
        self._log_times.insert(position, log_time_ns)
        self._infos.insert(position, info)

    def for_image(self, stamp_ns: int, log_time_ns: int) -> CameraInfo | None:
        exact = self._by_stamp.get(stamp_ns)
        if exact is not None or not self._infos:
            return exact
        position = bisect.bisect(self._log_times, log_time_ns)
        neighbours = [i for i in (position - 1, position) if 0 <= i < len(self._infos)]
        nearest = min(neighbours, key=lambda i: abs(self._log_times[i] - log_time_ns))
        return self._infos[nearest]


@dataclass
class _Frame:
    log_time_ns: int
    header: Header  # the image's own
    rgb: np.ndarray
    anchor_points: np.ndarray | None = None  # the newest unused anchor cloud logged before the image


@dataclass
class _DepthWriter:
    """Batches decoded images, runs the predictor, writes each frame's outputs to the sink."""

    predictor: DepthPredictor
    batch_size: int
    output_options: OutputOptions
    image_class: type[Image] | type[CompressedImage]
    sink: BagSink
    topics: dict[str, str]  # DepthOutputs field -> output topic (TopicPlan.outputs)
    like: dict[str, Connection]  # a source connection of each message type, for its definition
    camera_infos: CameraInfoIndex
    report: BagDepthReport
    _batch: list[_Frame] = field(default_factory=list)
    _bad_camera_info_warned: bool = False
    _connections: dict[str, Connection] = field(default_factory=dict)  # output topic -> made on first message
    _anchor: DepthScaleAnchor = field(default_factory=DepthScaleAnchor)  # one camera: the image topic's
    _anchor_points: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._builder = DepthOutputBuilder(self.predictor.record)

    def add_anchor_points(self, log_time_ns: int, raw: bytes) -> None:
        """A cloud of the anchor points topic: the next image uses it."""
        try:
            self._anchor_points = sparse_points_from_cloud(cdr.decode(raw, PointCloud2))
        except (cdr.CdrDecodeError, PointCloudError) as exc:
            logger.warning("anchor cloud at log time %d skipped: %s", log_time_ns, exc)
            return
        self.report.anchor_clouds += 1

    def add(self, log_time_ns: int, raw: bytes) -> None:
        self.report.images += 1
        try:
            message = cdr.decode(raw, self.image_class)
            rgb = decode_image(message)
        except ValueError as exc:  # ImageConversionError, CdrDecodeError: this image only
            self.report.images_failed += 1
            logger.warning("image at log time %d skipped: %s", log_time_ns, exc)
            return
        self._batch.append(_Frame(log_time_ns, message.header, rgb, self._anchor_points))
        self._anchor_points = None
        if len(self._batch) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Run the predictor on the images in hand and write their outputs."""
        frames, self._batch = self._batch, []
        by_size: dict[tuple[int, int], list[_Frame]] = {}
        for frame in frames:  # one predictor call per image size
            by_size.setdefault(frame.rgb.shape[:2], []).append(frame)
        options = self.output_options
        for size, group in by_size.items():
            prediction = self.predictor.infer(
                np.stack([f.rgb for f in group]), output_size=options.output_size or size,
                with_embedding=options.publish_embedding, with_confidence=options.wants_confidence,
            )
            depths = prediction.depth.cpu().numpy()
            embeddings = None if prediction.embedding is None else prediction.embedding.float().cpu().numpy()
            confidences = None if prediction.confidence is None else prediction.confidence.cpu().numpy()
            for index, frame in enumerate(group):
                self._write_outputs(frame, depths[index], None if embeddings is None else embeddings[index],
                                    None if confidences is None else confidences[index])

    def _calibration(self, frame: _Frame) -> CameraCalibration | None:
        info = self.camera_infos.for_image(stamp_ns(frame.header.stamp), frame.log_time_ns)
        if info is None:
            return None
        try:
            return CameraCalibration.from_msg(info)
        except CameraInfoError as exc:
            if not self._bad_camera_info_warned:
                self._bad_camera_info_warned = True
                logger.warning("unusable CameraInfo (%s): those frames get a depth image only", exc)
            return None

    def _connection(self, topic: str, message_type: type) -> Connection:
        connection = self._connections.get(topic)
        if connection is None:
            msgtype = cdr.type_name(message_type)
            connection = self._connections[topic] = self.sink.add_topic(topic, msgtype, self.like.get(msgtype))
        return connection

    def _write_outputs(
        self, frame: _Frame, depth: np.ndarray, embedding: np.ndarray | None, confidence: np.ndarray | None
    ) -> None:
        calibration = self._calibration(frame)
        if calibration is None:
            self.report.images_without_camera_info += 1
        if frame.anchor_points is not None:
            self._anchor.set_anchor_points(frame.anchor_points)
        outputs = self._builder.build(depth, frame.header, calibration, self.output_options, rgb=frame.rgb,
                                      embedding=embedding, confidence=confidence, anchor=self._anchor)
        # Every message built, on its topic (the node's publishing order), at the image's log time.
        for topic, message in outputs.messages():
            name = self.topics[topic.field]
            self.sink.write(self._connection(name, topic.message_type), frame.log_time_ns, cdr.encode(message))
            self.report.written[name] = self.report.written.get(name, 0) + 1
        self.report.depth_images += 1
        self.report.depth_camera_infos += outputs.depth_camera_info is not None
        self.report.point_clouds += outputs.points is not None


def _collect_camera_infos(source: BagSource, topic: str) -> CameraInfoIndex:
    index = CameraInfoIndex()
    stream = source.stream({topic})
    for _connection, log_time, raw in stream:
        try:
            index.add(cdr.decode(raw, CameraInfo), log_time)
        except cdr.CdrDecodeError as exc:
            logger.warning("CameraInfo at log time %d skipped: %s", log_time, exc)
    logger.info("%d CameraInfo message(s) on %s", len(index), topic)
    return index


def add_depth_to_bag(
    input_path: str | Path,
    output_path: str | Path,
    predictor: DepthPredictor,
    options: BagDepthOptions,
) -> BagDepthReport:
    """Copy ``input_path`` to ``output_path`` with depth, depth camera info, point clouds and the
    other outputs the options ask for added.

    Raises :class:`BagDepthError`, :class:`~space_clip_ros.bags.reading.BagOpenError` or
    :class:`~space_clip_ros.bags.writing.BagWriteError` when the job cannot start. Damage in the
    input does not raise: the report's ``damage`` says where reading stopped, and the output
    holds every message read before it.
    """
    if options.batch_size < 1:
        raise BagDepthError(f"batch size must be >= 1, got {options.batch_size}")
    output_options = options.output_options(predictor.record)
    reason = output_options.problem()
    if reason is None and output_options.wants_confidence:
        reason = predictor.confidence_problem()
    if reason is not None:
        raise BagDepthError(f"output options: {reason}")
    started = time.perf_counter()
    report = BagDepthReport(Path(input_path), Path(output_path))
    with BagSource(input_path) as source:
        report.salvaged = list(source.salvaged)
        report.messages_expected = source.expected_messages
        plan = plan_topics(options, source.topic_types())
        report.topics = plan
        camera_infos = _collect_camera_infos(source, plan.camera_info) if plan.camera_info else CameraInfoIndex()
        if plan.camera_info and not camera_infos:
            logger.warning("%s holds no readable CameraInfo: writing depth images only", plan.camera_info)

        like = {c.msgtype: c for c in source.connections}
        storage = options.storage or source.storage
        sink = BagSink(output_path, storage, typestore_for(source.ros_distro), overwrite=options.overwrite,
                       compression=source.compression)
        with sink:
            for connection in source.connections:  # every topic, even those without messages
                sink.copy_connection(connection)
            image_class = CompressedImage if plan.image_type == cdr.COMPRESSED_IMAGE_TYPE else Image
            writer = _DepthWriter(predictor, options.batch_size, output_options, image_class, sink, plan.outputs,
                                  like, camera_infos, report)
            total = sum(c.msgcount for c in source.connections if c.topic == plan.image) or None
            stream = source.stream()
            with tqdm(total=total, unit="img", desc="depth", disable=not options.progress) as progress:
                for connection, log_time, raw in stream:
                    sink.write(sink.copy_connection(connection), log_time, raw)
                    if connection.topic == plan.image:
                        writer.add(log_time, raw)
                        progress.update(1)
                    elif connection.topic == plan.anchor_points:
                        writer.add_anchor_points(log_time, raw)
                writer.flush()  # the last, partial batch (also after damage: those images were read)
            report.messages_read = stream.count
            report.damage = stream.damage
            report.messages_written = sink.messages_written
    report.seconds = time.perf_counter() - started
    return report
