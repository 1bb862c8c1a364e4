"""One camera frame in, its output messages out: the depth node's work without rclpy or DDS.

A frame reads in a straight line, through three results:

    image message -> decode_image -> RGB pixels
                  -> DepthPredictor.infer -> Prediction (depth, embedding; on the device)
                  -> DepthOutputBuilder.build -> DepthOutputs (the messages)

The node calls :meth:`DepthFrameProcessor.process` from its worker thread; the benchmark
(``space-clip-benchmark``, frame section) times the same call stage by stage through the optional
:class:`~space_clip_ros.inference.benchmarking.timing.StageClock`. The bag tool runs the predictor
on batches itself and calls the same :class:`~space_clip_ros.outputs.builder.DepthOutputBuilder`.
"""

from __future__ import annotations

import dataclasses
import time

from sensor_msgs.msg import CompressedImage, Image

from space_clip_ros.inference.benchmarking.timing import StageClock, device_synchronizer
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.outputs.builder import DepthOutputBuilder, DepthOutputs
from space_clip_ros.outputs.calibration import CameraCalibration
from space_clip_ros.outputs.messages import decode_image
from space_clip_ros.outputs.options import OutputOptions


class DepthFrameProcessor:
    """Runs the predictor on frames (inference step) and hands the depth to a DepthOutputBuilder."""

    def __init__(self, predictor: DepthPredictor) -> None:
        self._predictor = predictor
        self._outputs = DepthOutputBuilder(predictor.record)
        self._synchronize = device_synchronizer(predictor.device)

    def process(
        self,
        message: Image | CompressedImage,
        calibration: CameraCalibration | None,
        options: OutputOptions,
        clock: StageClock | None = None,
    ) -> DepthOutputs:
        """All enabled outputs of one frame. Raises ValueError subclasses (ImageConversionError,
        CameraInfoError, PointCloudError) for input that cannot be used; the text says why.

        ``clock`` (benchmarks) is charged ``image_to_array``, ``inference`` and the output stages.
        """
        clock = clock or StageClock()
        rgb = decode_image(message)
        clock.stamp("image_to_array")

        started = time.perf_counter()
        prediction = self._predictor.infer(
            rgb[None], output_size=options.output_size or rgb.shape[:2], with_embedding=options.publish_embedding
        )
        depth = prediction.depth[0]  # stays where it is: a GPU map gets its cloud built there
        embedding = None if prediction.embedding is None else prediction.embedding[0].float().cpu().numpy()
        self._synchronize()  # so that inference_s is the GPU's time too, not only the launches
        inference_s = time.perf_counter() - started
        clock.stamp("inference")

        outputs = self._outputs.build(depth, message.header, calibration, options, rgb=rgb, embedding=embedding,
                                      clock=clock)
        return dataclasses.replace(outputs, inference_s=inference_s)
