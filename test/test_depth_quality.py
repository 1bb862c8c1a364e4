"""Depth a costmap can trust, below the ROS layer (issue 13): the confidence map (model, predictor,
builder), the flying-pixel filter, REP 117 out-of-range values, the metric scale anchor, the stamped
embedding, and the quality measurements of outputs/quality.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from space_clip_ros.data.synthetic import KITTI_INTRINSICS, SceneConfig, make_scene, render, trajectory
from space_clip_ros.inference.runtime.prediction import NO_AUXILIARY_HEADS
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.model import CheckpointRecord, create_model, make_record
from space_clip_ros.model.confidence import CONFIDENCE_SHARPNESS, aux_agreement_confidence, confidence_heads
from space_clip_ros.msgs import camera_info_from_intrinsics, image_msg_to_depth, pointcloud2_to_xyz_grid
from space_clip_ros.msgs.image import depth_to_image_msg
from space_clip_ros.outputs.anchoring import DepthScaleAnchor
from space_clip_ros.outputs.builder import DepthOutputBuilder
from space_clip_ros.outputs.calibration import CameraCalibration
from space_clip_ros.outputs.flying_pixels import flying_pixel_mask
from space_clip_ros.outputs.options import OutputOptions
from space_clip_ros.outputs.quality import sparsification_curves
from space_clip_ros.outputs.topics import DEPTH_CONFIDENCE, IMAGE_EMBEDDING, IMAGE_EMBEDDING_STAMPED, OUTPUT_TOPICS

FRAME = "camera_color_optical_frame"
STREET = KITTI_INTRINSICS.scaled_to(320, 97)


def header(sec: int = 5, nanosec: int = 6) -> Header:
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=FRAME)


def calibration(intrinsics) -> CameraCalibration:
    return CameraCalibration.from_msg(camera_info_from_intrinsics(intrinsics, header()))


@pytest.fixture(scope="module")
def tiny_predictor(tiny_model_config):
    torch.manual_seed(0)
    model = create_model(tiny_model_config)
    with torch.no_grad():  # positive depth around 2 m, and auxiliary heads that say something too
        model.decoder.head.net[1].bias.fill_(2.0)
        for head in model.decoder.aux_heads:
            head.net[1].bias.fill_(2.0)
    return DepthPredictor(model, device="cpu")


@pytest.fixture(scope="module")
def street():
    """Exact depth of a street frame (camera 1.65 m above the road): sky 0, cars, road."""
    scene = make_scene(SceneConfig(kind="street", seed=3))
    _, depth = render(scene, trajectory(scene, 3)[1], STREET)
    return scene, depth


# ---- confidence ----------------------------------------------------------------------------------------
def test_confidence_formula_and_which_heads():
    depth = torch.full((1, 2, 3), 2.0)
    aux = [torch.full((1, 2, 3), 2.0), depth * math.exp(0.1)]
    confidence = aux_agreement_confidence(depth, aux)  # disagreement (0 + 0.1) / 2
    assert torch.allclose(confidence, torch.full_like(depth, math.exp(-CONFIDENCE_SHARPNESS * 0.05)))
    assert torch.all(aux_agreement_confidence(depth, [torch.zeros_like(depth)]) > 0)  # an empty ReLU map: no log(0)
    weighted = aux_agreement_confidence(depth, aux, weights=[0.1, 0.05])  # disagreement 0.05 * 0.1 / 0.15
    assert torch.allclose(weighted, torch.full_like(depth, math.exp(-CONFIDENCE_SHARPNESS * 0.1 / 3)))
    # Trained heads only, with their loss weights: the release's give heads 0 and 1; a record's own win.
    assert confidence_heads(None, 3) == ((0, 0.1), (1, 0.05))
    record = CheckpointRecord(model={}, mean=[], std=[], encoder_input_size=[],
                              extra={"config": {"loss": {"aux_weights": [0.0, 0.2, 0.1]}}})
    assert confidence_heads(record, 3) == ((1, 0.2), (2, 0.1)) and confidence_heads(record, 2) == ((1, 0.2),)
    record.extra["config"]["loss"]["aux_weights"] = [0.0, 0.0, 0.0]
    assert confidence_heads(record, 3) == ()


def test_predictor_gives_confidence_of_the_depth_size_without_changing_the_depth(tiny_predictor):
    rgb = np.random.default_rng(0).integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)
    plain = tiny_predictor.infer(rgb, output_size=(30, 44))
    both = tiny_predictor.infer(rgb, output_size=(30, 44), with_confidence=True)
    assert plain.confidence is None
    assert torch.equal(plain.depth, both.depth)  # the auxiliary heads read the decoder, never change it
    assert both.confidence.shape == (2, 30, 44) and both.confidence.dtype == torch.float32
    assert float(both.confidence.min()) > 0.0 and float(both.confidence.max()) <= 1.0
    assert tiny_predictor.confidence_heads == ((0, 0.1), (1, 0.05)) and tiny_predictor.confidence_problem() is None


def test_exported_graphs_have_no_confidence_and_say_so(tiny_model_config):
    torch.manual_seed(0)
    predictor = DepthPredictor(create_model(tiny_model_config), device="cpu", backend="onnxruntime")
    assert predictor.confidence_problem() == NO_AUXILIARY_HEADS
    rgb = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="backend torch"):
        predictor.infer(rgb, with_confidence=True)
    assert predictor.infer(rgb).confidence is None  # depth alone still works


def test_decoder_without_trained_auxiliary_heads_has_no_confidence(tiny_model_config):
    torch.manual_seed(0)
    model = create_model(tiny_model_config)
    record = make_record(model, extra={"config": {"loss": {"aux_weights": [0.0, 0.0, 0.0]}}})
    predictor = DepthPredictor(model, device="cpu", record=record)
    assert "trained auxiliary head" in predictor.confidence_problem()
    with pytest.raises(ValueError, match="trained auxiliary head"):
        predictor.infer(np.zeros((1, 32, 32, 3), dtype=np.uint8), with_confidence=True)


def test_confidence_message_and_gated_cloud(tiny_predictor):
    rgb = np.random.default_rng(1).integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
    prediction = tiny_predictor.infer(rgb, with_confidence=True)
    depth, confidence = prediction.depth[0], prediction.confidence[0]
    camera = calibration(STREET.scaled_to(64, 48))
    builder = DepthOutputBuilder(None)
    threshold = float(confidence.median())
    options = OutputOptions(publish_confidence=True, points_min_confidence=threshold, max_depth=100.0)
    out = builder.build(depth, header(), camera, options, confidence=confidence)
    message = out.confidence
    assert (message.encoding, message.height, message.width) == ("32FC1", 48, 64)
    assert message.header.stamp == out.depth_image.header.stamp and message.header.frame_id == FRAME
    np.testing.assert_array_equal(image_msg_to_depth(message), confidence.numpy())  # as computed, every pixel
    assert dict((t.name, m) for t, m in out.messages())[DEPTH_CONFIDENCE] is message
    z = pointcloud2_to_xyz_grid(out.points)[..., 2]
    low = confidence.numpy() < threshold
    assert np.all(np.isnan(z[low])) and np.all(np.isfinite(z[~low]))
    assert out.low_confidence_pixels == np.count_nonzero(low) > 0
    # The depth image keeps the gated pixels: gating is the cloud's.
    assert np.isfinite(image_msg_to_depth(out.depth_image)).all()
    # Gating on a torch map on the device path gives the same cloud (CPU stands in for the GPU here).
    on_device = DepthOutputBuilder(None, cloud_on_device=True).build(
        depth, header(), camera, options.replace(publish_confidence=False), confidence=confidence)
    assert bytes(on_device.points.data) == bytes(out.points.data)
    with pytest.raises(ValueError, match="confidence map"):
        builder.build(depth, header(), camera, options)  # asked for, not given


# ---- flying pixels -------------------------------------------------------------------------------------
def _smeared_step(width: int = 64, height: int = 48) -> np.ndarray:
    """1 m on the left, 4 m on the right, with a four-pixel ramp between them."""
    row = np.concatenate([np.full(30, 1.0), np.linspace(1.0, 4.0, 6)[1:-1], np.full(width - 34, 4.0)])
    return np.repeat(row[None].astype(np.float32), height, axis=0)


def test_flying_pixels_leave_the_cloud_and_optionally_the_depth_image():
    depth = _smeared_step()
    camera = calibration(STREET.scaled_to(64, 48))
    builder = DepthOutputBuilder(None)
    plain = builder.build(depth, header(), camera, OutputOptions())
    filtered = builder.build(depth, header(), camera, OutputOptions(flying_pixel_threshold=0.04))
    flying = flying_pixel_mask(depth, 0.04)
    assert filtered.flying_pixels == np.count_nonzero(flying) == 6 * 48  # ramp plus its two end pixels
    z_plain, z = (pointcloud2_to_xyz_grid(o.points)[..., 2] for o in (plain, filtered))
    assert np.isfinite(z_plain).all() and np.all(np.isnan(z[flying])) and np.isfinite(z[~flying]).all()
    assert bytes(filtered.depth_image.data) == bytes(plain.depth_image.data)  # the image keeps them by default
    invalid = builder.build(depth, header(), camera,
                            OutputOptions(flying_pixel_threshold=0.04, flying_pixels_invalid=True))
    image = image_msg_to_depth(invalid.depth_image)
    assert np.all(np.isnan(image[flying])) and np.isfinite(image[~flying]).all()


def test_flying_pixels_are_found_before_the_range_is_applied():
    """A ramp running out of the range (an edge against the sky) is still caught at its in-range end."""
    depth = _smeared_step()
    camera = calibration(STREET.scaled_to(64, 48))
    options = OutputOptions(max_depth=2.0, flying_pixel_threshold=0.04)
    out = DepthOutputBuilder(None).build(depth, header(), camera, options)
    z = pointcloud2_to_xyz_grid(out.points)[..., 2]
    assert np.isnan(z[:, 29]).all() and np.isnan(z[:, 30]).all()  # in range (1 m, 1.6 m) but flying
    assert np.isfinite(z[:, :29]).all()


# ---- REP 117 -------------------------------------------------------------------------------------------
def test_rep117_infinities_in_32fc1_zero_in_16uc1_no_points():
    depth = np.array([[0.05, 0.5, 5.0, 50.0, np.nan, 0.0, -1.0, np.inf]], dtype=np.float32).repeat(3, axis=0)
    camera = calibration(STREET.scaled_to(8, 3))
    builder = DepthOutputBuilder(None)
    default = builder.build(depth, header(), camera, OutputOptions(min_depth=0.1, max_depth=10.0))
    rep117 = builder.build(depth, header(), camera, OutputOptions(min_depth=0.1, max_depth=10.0, out_of_range="rep117"))
    # The default stays what it was: NaN at every invalid pixel (the bytes of the plain conversion).
    masked = np.where((depth >= 0.1) & (depth <= 10.0), depth, np.nan).astype(np.float32)
    assert bytes(default.depth_image.data) == bytes(depth_to_image_msg(masked, header()).data)
    expected = np.array([-np.inf, 0.5, 5.0, np.inf, np.nan, np.nan, np.nan, np.inf], dtype=np.float32)
    np.testing.assert_array_equal(image_msg_to_depth(rep117.depth_image)[0], expected)
    # The cloud: +-Inf pixels are not points, exactly as NaN pixels.
    assert bytes(rep117.points.data) == bytes(default.points.data)
    z = pointcloud2_to_xyz_grid(rep117.points)[0, :, 2]
    assert np.isfinite(z[1:3]).all() and np.isnan(z[[0, 3, 4, 5, 6, 7]]).all()
    # 16UC1 has only 0 for "no reading" (REP 118), whatever the mode.
    mm = builder.build(depth, header(), camera, OutputOptions(min_depth=0.1, max_depth=10.0, out_of_range="rep117",
                                                              depth_encoding="16UC1"))
    np.testing.assert_array_equal(np.frombuffer(bytes(mm.depth_image.data), "<u2")[:8], [0, 500, 5000, 0, 0, 0, 0, 0])


# ---- scale anchor --------------------------------------------------------------------------------------
@pytest.mark.parametrize("wrong", [0.7, 1.4])
def test_ground_plane_anchor_restores_the_scale(street, wrong):
    scene, exact = street
    options = OutputOptions(scale_anchor="ground_plane", camera_height=scene.camera_height, max_depth=80.0)
    out = DepthOutputBuilder(None).build(exact * np.float32(wrong), header(), calibration(STREET), options)
    assert out.anchor.measured == pytest.approx(1.0 / wrong, rel=0.02) and out.anchor.scale == out.anchor.measured
    assert out.anchor.inlier_share > 0.5
    np.testing.assert_allclose(out.anchor.normal, (0.0, -1.0, 0.0), atol=0.02)
    image = image_msg_to_depth(out.depth_image)
    valid = np.isfinite(image)
    np.testing.assert_allclose(image[valid], exact[valid], rtol=0.02)
    z = pointcloud2_to_xyz_grid(out.points)[..., 2]
    np.testing.assert_array_equal(z[valid], image[valid])  # the cloud is the anchored depth too


def test_anchor_keeps_its_scale_through_frames_without_a_fit_and_smooths(street):
    scene, exact = street
    anchor = DepthScaleAnchor()
    options = OutputOptions(scale_anchor="ground_plane", camera_height=scene.camera_height, max_depth=80.0)
    first = anchor.fit(exact * np.float32(0.7), STREET, options)
    wall = np.full_like(exact, 3.0)  # no floor in view: no credible plane
    second = anchor.fit(wall, STREET, options)
    assert second.measured is None and second.scale == first.scale
    no_camera = anchor.fit(exact, None, options)  # no CameraInfo yet: no fit either
    assert no_camera.measured is None and no_camera.scale == first.scale
    smoothed = anchor.fit(exact * np.float32(0.8), STREET, options.replace(scale_smoothing=0.5))
    assert smoothed.scale == pytest.approx(0.5 * first.scale + 0.5 * smoothed.measured)
    switched = anchor.fit(exact, STREET, options.replace(scale_anchor="sparse_points"))
    assert switched.scale == 1.0 and switched.measured is None and switched.anchor_points == 0  # starts over


def test_sparse_points_anchor_uses_each_cloud_once(street):
    _, exact = street
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(exact > 0)
    pick = rng.choice(len(rows), 300, replace=False)
    z = exact[rows[pick], cols[pick]].astype(np.float64)
    points = np.stack([(cols[pick] - STREET.cx) * z / STREET.fx, (rows[pick] - STREET.cy) * z / STREET.fy, z], 1)
    options = OutputOptions(scale_anchor="sparse_points", max_depth=80.0)
    anchor = DepthScaleAnchor()
    anchor.set_anchor_points(points)
    builder = DepthOutputBuilder(None)
    out = builder.build(exact * np.float32(1.4), header(), calibration(STREET), options, anchor=anchor)
    assert out.anchor.measured == pytest.approx(1 / 1.4, rel=1e-3) and out.anchor.anchor_points == 300
    assert out.anchor.inlier_share == pytest.approx(1.0)
    again = builder.build(exact * np.float32(1.4), header(), calibration(STREET), options, anchor=anchor)
    assert again.anchor.measured is None and again.anchor.scale == out.anchor.scale  # no new cloud: kept


def test_scale_anchor_needs_a_camera_height():
    assert "camera_height" in OutputOptions(scale_anchor="ground_plane").problem()
    assert OutputOptions(scale_anchor="ground_plane", camera_height=1.2).problem() is None
    assert OutputOptions(scale_anchor="sparse_points").problem() is None


# ---- stamped embedding ---------------------------------------------------------------------------------
def test_embedding_goes_out_stamped_and_unstamped():
    embedding = np.linspace(-1.0, 1.0, 12, dtype=np.float32)
    depth = np.full((4, 6), 2.0, dtype=np.float32)
    out = DepthOutputBuilder(None).build(depth, header(7, 8), None, OutputOptions(publish_embedding=True),
                                         embedding=embedding)
    stamped = out.embedding_stamped
    assert (stamped.encoding, stamped.height, stamped.width, stamped.step) == ("32FC1", 1, 12, 48)
    assert stamped.header.stamp == out.depth_image.header.stamp == Time(sec=7, nanosec=8)
    assert stamped.header.frame_id == FRAME and stamped.is_bigendian == 0
    np.testing.assert_array_equal(np.frombuffer(bytes(stamped.data), "<f4"), embedding)
    np.testing.assert_array_equal(np.asarray(out.embedding.data, dtype=np.float32), embedding)
    names = [t.name for t, _ in out.messages()]
    assert names.index(IMAGE_EMBEDDING_STAMPED) < names.index(IMAGE_EMBEDDING)
    assert {t.name for t in OUTPUT_TOPICS} >= {DEPTH_CONFIDENCE, IMAGE_EMBEDDING_STAMPED, IMAGE_EMBEDDING}


# ---- measurements --------------------------------------------------------------------------------------
def test_sparsification_of_perfect_and_random_confidence():
    rng = np.random.default_rng(0)
    errors = [rng.random(1000), rng.random(500) * 2.0]
    perfect = sparsification_curves(errors, [-e for e in errors])
    assert perfect.ause == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(perfect.confidence, perfect.oracle)
    assert perfect.ause_random > 0.1
    noise = sparsification_curves(errors, [rng.random(e.size) for e in errors])
    assert noise.ause == pytest.approx(noise.ause_random, rel=0.2)
    conf20, oracle20, random20 = perfect.at(0.2)
    assert conf20 == oracle20 < random20 == pytest.approx(perfect.random[0], rel=0.1)
    assert perfect.images == 2 and perfect.pixels == 1500


@pytest.mark.slow
@pytest.mark.parametrize("scene, factor", [("street", 0.8), ("indoor", 0.97)])
def test_least_confident_20_percent_hold_more_error_than_a_random_20_percent(scene, factor):
    """The 20 % comparison of the issue on the demo decoder trained on synthetic scenes (held-out
    scenes, exact depth). A decoder trained in about 30 s gives no usable signal (AbsRel 0.44 after
    80 s of training, least confident 6 % below random), so this reads the demo's cached checkpoint
    and skips when there is none: ``scripts/depth_quality.py`` or ``space-clip-demo --scene street``
    trains it (a few minutes each). Street: the least-confident 20 % hold far more error (about 40 %
    lower AbsRel without them, random: 0 %); indoor the signal is weak (about 6 %), see
    docs/ros_node.md."""
    from space_clip_ros.demo.checkpoint import DemoTraining, cached_demo_checkpoint
    from space_clip_ros.outputs.quality import synthetic_confidence_report

    checkpoint = cached_demo_checkpoint(DemoTraining(scene=scene, device="cpu"))
    if checkpoint is None:
        pytest.skip(f"no cached demo checkpoint for {scene} scenes (run scripts/depth_quality.py once)")
    predictor = DepthPredictor.from_checkpoint(checkpoint, device="cpu")
    report = synthetic_confidence_report(predictor, scene, frames_per_scene=4)
    assert report.abs_rel_without_least_confident < factor * report.abs_rel_without_random
    assert report.abs_rel_without_random == pytest.approx(report.abs_rel, rel=0.03)  # random removal: no gain
    assert report.curves.ause < report.curves.ause_random


# ---- the demo's pictures of them -----------------------------------------------------------------------
def test_demo_pictures_of_confidence_flying_pixels_rep117_and_the_ground_plane(street):
    from space_clip_ros.demo import pictures
    from space_clip_ros.demo.recording import Recording
    from space_clip_ros.outputs.scale_anchor import scale_from_ground_plane

    scene, exact = street
    height, width = exact.shape
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    confidence = np.linspace(0.0, 1.0, exact.size, dtype=np.float32).reshape(exact.shape)
    picture = pictures.confidence_picture(rgb, exact, confidence, 0.0, 60.0, ground_truth=exact, caption="c")
    assert picture.shape == (24 + height + 20, 4 * width + 3 * 78, 3)  # 4 panels, 3 scales, title, caption
    conf_panel = picture[24:24 + height, 2 * width:3 * width]
    assert np.abs(conf_panel[0, 0].astype(int) - conf_panel[-1, -1].astype(int)).sum() > 100  # 0 and 1 differ

    from space_clip_ros.outputs.quality import smear_depth_edges

    smeared = smear_depth_edges(exact, 4, fill_depth=120.0)
    flying = pictures.flying_pixels_picture(rgb, smeared, STREET, 0.04, 0.1, 80.0, view_size=(width, height))
    assert flying.shape == (24 + height, 3 * width, 3)
    before, after = flying[24:, width:2 * width], flying[24:, 2 * width:]
    red = np.array(pictures._FLYING_BGR)
    assert np.all(before == red, axis=-1).any() and not np.all(after == red, axis=-1).any()

    marked = pictures.rep117_picture(rgb, exact * np.float32(1.0) + np.float32(0.5), 3.0, 30.0)
    rep_panel = marked[24:24 + height, 2 * width:3 * width]
    assert np.all(rep_panel == pictures._PLUS_INF_BGR, axis=-1).any()  # the far road and the sky: +Inf
    assert np.all(rep_panel == pictures._MINUS_INF_BGR, axis=-1).any()  # the near road: -Inf

    plane = scale_from_ground_plane(exact, STREET, scene.camera_height)
    ground = pictures.ground_plane_picture(rgb, exact, STREET, plane)
    assert ground.shape == (24 + height + 20, width, 3) and (ground[24:24 + height, :, 1] > 100).any()

    # The recording keeps each confidence map with the depth frame of its stamp.
    recording = Recording()
    recording.add_input(5, rgb)
    recording.add_depth(5, received_at=1.0, depth=exact)
    recording.add_confidence(5, confidence)
    recording.add_confidence(6, confidence)  # no such frame: counted, not kept
    assert recording.frames[0].confidence is confidence and recording.confidence_received == 2
