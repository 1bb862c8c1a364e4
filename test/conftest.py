"""Shared fixtures: small real open_clip backbones and an isolated ROS 2 domain per test session."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

# Keep DDS discovery on this machine and away from other test runs sharing it.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
# Backend auto's choices (inference.runtime.auto_select) and the kept ONNX graphs beside them
# (runtime.graph_cache) go to this session's own folder, for this process and the nodes it starts,
# not to the user's ~/.cache; the folder goes when the session ends.
if "SPACE_CLIP_AUTO_CACHE" not in os.environ:
    _auto_cache_folder = tempfile.mkdtemp(prefix="space_clip_test_auto_")
    atexit.register(shutil.rmtree, _auto_cache_folder, ignore_errors=True)
    os.environ["SPACE_CLIP_AUTO_CACHE"] = os.path.join(_auto_cache_folder, "auto_paths.json")

# The tiny test model of space_clip_ros.data.tiny_model: a real open_clip ViT with the
# reference depth (12 blocks) but a narrow width; it runs in milliseconds on a CPU.
@pytest.fixture(scope="session")
def tiny_model_config():
    from space_clip_ros.data.tiny_model import tiny_model_config

    return tiny_model_config()


@pytest.fixture(scope="session")
def tiny_backbone_config(tiny_model_config):
    return tiny_model_config.backbone


@pytest.fixture(scope="session")
def tiny_decoder_config(tiny_model_config):
    return tiny_model_config.decoder


@pytest.fixture(scope="session")
def reference_backbone():
    """Full-size ViT-B/16 with random weights (built once per session: ~1 s, 350 MB)."""
    from space_clip_ros.model import BackboneConfig, build_backbone

    return build_backbone(BackboneConfig(name="ViT-B-16"))


@pytest.fixture(scope="session")
def run_python():
    """Runs a Python snippet in a fresh interpreter of this environment (what a console script
    imports, without this test process's modules); the CompletedProcess, output as text."""

    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=120)

    return run


# A tiny model whose decoder has realistic batch-norm statistics and depths (median about 4 m), fitted
# to a synthetic camera frame: what the inference and export tests compare their fast paths against.
# A module using these sets REALISTIC_FRAME = (height, width, seed) and REALISTIC_SEEDS =
# (torch seed of the model, seed of make_decoder_realistic).
@pytest.fixture(scope="module")
def single_torch_thread():
    """One intra-op thread: these small models gain nothing from two, and on a machine whose cores
    are shared with other test runs two OpenMP threads wait on each other at every operator."""
    from space_clip_ros.inference.benchmarking.timing import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def frame(request):
    from space_clip_ros.inference.benchmarking.synthetic import synthetic_camera_image

    height, width, seed = request.module.REALISTIC_FRAME
    return synthetic_camera_image(height, width, seed=seed)


@pytest.fixture(scope="module")
def realistic_model(request, tiny_model_config, frame):
    import torch

    from space_clip_ros.inference.benchmarking.synthetic import make_decoder_realistic
    from space_clip_ros.model import SpaceClip

    torch_seed, decoder_seed = request.module.REALISTIC_SEEDS
    torch.manual_seed(torch_seed)
    return make_decoder_realistic(SpaceClip(tiny_model_config).eval(), frame, seed=decoder_seed)


@pytest.fixture(scope="module")
def eager_predictor(realistic_model):
    from space_clip_ros.inference.runtime.predictor import DepthPredictor

    return DepthPredictor(realistic_model, device="cpu")
