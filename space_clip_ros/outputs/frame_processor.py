"""Camera frames in, their output messages out: the depth node's work without rclpy or DDS.

A frame reads in a straight line, through three results:

    image message -> decode_image -> RGB pixels
                  -> DepthPredictor.infer -> Prediction (depth, embedding, confidence; on the device)
                  -> DepthOutputBuilder.build -> DepthOutputs (the messages)

Several cameras' frames share the middle step: :meth:`DepthFrameProcessor.predict` runs one
encoder + decoder pass for a batch of frames of any sizes (each frame is resized to the encoder
input on its own, then they are stacked), and :meth:`DepthFrameProcessor.build` makes each
frame's messages at its own size. The depth node's worker calls these two for the frames waiting
(the frames come from :class:`~space_clip_ros.outputs.camera_input.CameraInput`: decoded, paired
with their CameraInfo, undistorted); :meth:`DepthFrameProcessor.process` is the same for one image
message (the benchmark times it stage by stage through the optional
:class:`~space_clip_ros.inference.benchmarking.timing.StageClock`). The bag tool runs the predictor
on batches itself and calls the same :class:`~space_clip_ros.outputs.builder.DepthOutputBuilder`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from space_clip_ros.inference.benchmarking.timing import StageClock, device_synchronizer
from space_clip_ros.inference.runtime.prediction import Prediction
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.model.layers import resize_to
from space_clip_ros.outputs.anchoring import DepthScaleAnchor
from space_clip_ros.outputs.builder import DepthOutputBuilder, DepthOutputs
from space_clip_ros.outputs.calibration import CameraCalibration
from space_clip_ros.outputs.messages import decode_image
from space_clip_ros.outputs.options import OutputOptions


@dataclass(frozen=True)
class FramePrediction:
    """One frame's share of a batched pass.

    Attributes:
        depth: (H, W) metric depth at the frame's output size, where the model ran (a GPU map gets
            its cloud built there).
        embedding: the (D,) CLIP image embedding (NumPy) when the pass computed one.
        confidence: the (H, W) confidence map when the pass computed one.
        inference_s: the whole pass's time (the device's too).
        batch_size: how many frames the pass ran on.
    """

    depth: Any
    embedding: np.ndarray | None
    confidence: Any
    inference_s: float
    batch_size: int


class DepthFrameProcessor:
    """Runs the predictor on frames (one pass for a batch) and hands each depth map to a DepthOutputBuilder."""

    def __init__(self, predictor: DepthPredictor) -> None:
        self._predictor = predictor
        self._outputs = DepthOutputBuilder(predictor.record)
        self._synchronize = device_synchronizer(predictor.device)

    def predict(self, images: Sequence[np.ndarray], options: Sequence[OutputOptions]) -> list[FramePrediction]:
        """One encoder + decoder pass for ``images`` ((H, W, 3) uint8 RGB, any sizes), each frame's
        depth at its own output size (``options[i].output_size``, else its image size).

        One image is exactly ``DepthPredictor.infer`` on it. Several: each is prepared for the
        encoder on its own (``DepthPredictor.prepare_inputs``; the encoder input size is fixed) and
        the stack runs once; when the output sizes differ, the decoder's map at the encoder input
        size (its native map: each stage doubles the patch grid up to it) is resized bilinearly to
        each frame's size, which is the decoder's own last step. The embedding and the confidence
        map are computed when any frame's options ask for them. Raises ValueError for a confidence
        map this predictor cannot give (``DepthPredictor.confidence_problem``).
        """
        if len(images) != len(options) or not images:
            raise ValueError(f"predict needs one OutputOptions per image, got {len(images)} and {len(options)}")
        sizes = [tuple(opt.output_size or image.shape[:2]) for image, opt in zip(images, options)]
        with_embedding = any(opt.publish_embedding for opt in options)
        with_confidence = any(opt.wants_confidence for opt in options)
        started = time.perf_counter()
        if len(images) == 1:
            prediction = self._predictor.infer(images[0][None], output_size=sizes[0], with_embedding=with_embedding,
                                               with_confidence=with_confidence)
            depths = [prediction.depth[0]]
            confidences = [None if prediction.confidence is None else prediction.confidence[0]]
        else:
            prediction, depths, confidences = self._infer_batch(images, sizes, with_embedding, with_confidence)
        embeddings = [None] * len(images) if prediction.embedding is None else list(
            prediction.embedding.float().cpu().numpy())
        self._synchronize()  # so that inference_s is the GPU's time too, not only the launches
        inference_s = time.perf_counter() - started
        return [FramePrediction(depth, embedding, confidence, inference_s, len(images))
                for depth, embedding, confidence in zip(depths, embeddings, confidences)]

    @torch.inference_mode()
    def _infer_batch(
        self, images: Sequence[np.ndarray], sizes: list[tuple[int, int]], with_embedding: bool, with_confidence: bool
    ) -> tuple[Prediction, list[Any], list[Any]]:
        predictor = self._predictor
        for image in images:
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8 or 0 in image.shape[:2]:
                raise ValueError(f"expected non-empty uint8 images of shape (H, W, 3), got {image.dtype} {image.shape}")
        inputs = torch.cat([predictor.prepare_inputs(image[None]) for image in images])
        common = sizes[0] if len(set(sizes)) == 1 else tuple(predictor.input_size)
        if with_confidence:
            problem = predictor.confidence_problem()
            if problem is not None:
                raise ValueError(problem)
            prediction = predictor.engine.run(inputs, common, with_embedding, predictor.confidence_heads)
        else:
            prediction = predictor.engine.run(inputs, common, with_embedding)

        def at_size(maps: torch.Tensor | None, index: int) -> Any:
            if maps is None:
                return None
            return resize_to(maps[index : index + 1, None], sizes[index])[0, 0]

        depths = [at_size(prediction.depth, index) for index in range(len(images))]
        confidences = [at_size(prediction.confidence, index) for index in range(len(images))]
        return prediction, depths, confidences

    def build(
        self,
        prediction: FramePrediction,
        header: Header,
        calibration: CameraCalibration | None,
        options: OutputOptions,
        rgb: np.ndarray | None = None,
        clock: StageClock | None = None,
        anchor: DepthScaleAnchor | None = None,
    ) -> DepthOutputs:
        """The outputs of one frame's prediction (:meth:`DepthOutputBuilder.build`, which says what
        each argument is), with the pass's ``inference_s``. Raises PointCloudError (a ValueError)."""
        outputs = self._outputs.build(prediction.depth, header, calibration, options, rgb=rgb,
                                      embedding=prediction.embedding, clock=clock, confidence=prediction.confidence,
                                      anchor=anchor)
        return dataclasses.replace(outputs, inference_s=prediction.inference_s)

    def process(
        self,
        message: Image | CompressedImage,
        calibration: CameraCalibration | None,
        options: OutputOptions,
        clock: StageClock | None = None,
        anchor: DepthScaleAnchor | None = None,
    ) -> DepthOutputs:
        """All enabled outputs of one image message. Raises ValueError subclasses
        (ImageConversionError, CameraInfoError, PointCloudError) for input that cannot be used; the
        text says why (also for a confidence map this predictor cannot give:
        ``DepthPredictor.confidence_problem``).

        ``clock`` (benchmarks) is charged ``image_to_array``, ``inference`` and the output stages.
        ``anchor``: the camera's scale anchor state (``scale_anchor``); None: the builder's own.
        """
        clock = clock or StageClock()
        rgb = decode_image(message)
        clock.stamp("image_to_array")
        (prediction,) = self.predict([rgb], [options])
        clock.stamp("inference")
        return self.build(prediction, message.header, calibration, options, rgb=rgb, clock=clock, anchor=anchor)
