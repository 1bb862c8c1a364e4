"""The predictor used by the node and the CLIs; the device rule and focal rescaling it relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from space_clip_ros.data.camera import focal_rescale_factor
from space_clip_ros.devices import resolve_device
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.model import CheckpointRecord, SpaceClip
from space_clip_ros.model.preprocess import pixels_from_frames, resize_and_normalize


@pytest.fixture(scope="module")
def predictor(tiny_model_config):
    return DepthPredictor(SpaceClip(tiny_model_config), device="cpu")


def test_single_and_batch_shapes(predictor):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    depth = predictor.predict(image)
    assert depth.shape == (48, 64) and depth.dtype == np.float32
    batch = rng.integers(0, 255, (3, 30, 40, 3), dtype=np.uint8)
    assert predictor.predict(batch).shape == (3, 30, 40)
    assert predictor.predict(image, output_size=(12, 20)).shape == (12, 20)


def test_matches_model_on_manually_prepared_input(predictor):
    image = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        expected = predictor.model(
            resize_and_normalize(tensor, (224, 224), predictor.mean, predictor.std), output_size=(50, 70)
        ).depth[0, 0]
    np.testing.assert_allclose(predictor.predict(image), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_pixels_from_frames_is_the_predictors_own_preparation(predictor):
    """Tools, calibration and the benchmark prepare frames with pixels_from_frames: the same pixels the
    predictor gives its engine, for one frame and for a batch."""
    frames = np.random.default_rng(2).integers(0, 255, (2, 50, 70, 3), dtype=np.uint8)
    expected = predictor.prepare_inputs(frames)
    torch.testing.assert_close(pixels_from_frames(frames, predictor.input_size, predictor.mean, predictor.std),
                               expected, rtol=0, atol=0)
    torch.testing.assert_close(pixels_from_frames(frames[1], predictor.input_size, predictor.mean, predictor.std),
                               expected[1:], rtol=0, atol=0)


def test_embedding_is_the_clip_image_embedding(predictor):
    image = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    result = predictor.infer(image, with_embedding=True)
    assert result.embedding.shape == (2, predictor.model.backbone.visual.output_dim)


def test_bad_inputs_are_refused(predictor):
    with pytest.raises(ValueError, match="uint8"):
        predictor.infer(np.zeros((1, 10, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="empty image"):
        predictor.infer(np.zeros((1, 0, 10, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("auto").type in {"cpu", "cuda"}


def test_one_device_rule_for_the_node_and_training():
    from space_clip_ros.training.distributed import resolve_device as training_device

    assert resolve_device("cpu") == training_device("cpu", 3) == torch.device("cpu")
    with pytest.raises(ValueError, match="train.device must be one of auto, cuda, cpu or cuda:N, got 'gpu'"):
        training_device("gpu", 0)
    if torch.cuda.is_available():
        assert training_device("cuda", 0) == torch.device("cuda", 0) and resolve_device("cuda") == torch.device("cuda")


def test_focal_rescale_factor():
    record = CheckpointRecord(
        model={}, mean=[0, 0, 0], std=[1, 1, 1], encoder_input_size=[224, 224],
        train_focal=500.0, train_image_size=[480, 640],
    )
    # Same image size: plain f_camera / f_train.
    assert focal_rescale_factor(1000.0, 1000.0, (480, 640), record) == pytest.approx(2.0)
    # Same camera at half resolution: focal and size halve together, no rescale.
    assert focal_rescale_factor(250.0, 250.0, (240, 320), record) == pytest.approx(1.0)
    record.train_focal = None
    assert focal_rescale_factor(1000.0, 1000.0, (480, 640), record) == 1.0
    assert focal_rescale_factor(1000.0, 1000.0, (480, 640), None) == 1.0
