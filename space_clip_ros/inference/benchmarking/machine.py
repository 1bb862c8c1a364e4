"""What a benchmark ran on: the machine, the software, and its memory use."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import sys

import psutil
import torch

from ..runtime.cpu_features import cpu_model_and_flags

_PACKAGES = ("torch", "onnxruntime", "onnxruntime-gpu", "onnx", "open_clip_torch", "numpy", "opencv-python-headless",
             "tensorrt", "ros-rclpy")


def machine_info(device: torch.device) -> dict:
    """CPU model, cores, CPU features, memory, GPU name and the load average at the time of the call."""
    cpu_model, flags = cpu_model_and_flags()
    info = {
        "cpu_model": cpu_model,
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "cpu_flags": list(flags),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "platform": platform.platform(),
        "gpu": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                       "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    return info


def software_versions() -> dict:
    """Python and the versions of the packages that shape inference speed (absent ones left out)."""
    versions = {"python": sys.version.split()[0], "torch_threads": torch.get_num_threads()}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


class MemoryProbe:
    """Peak memory: CUDA max allocated on a GPU; on the CPU, the resident set size (now and peak)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict:
        if self.device.type == "cuda":
            return {
                "cuda_max_allocated_mb": round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1),
                "cuda_max_reserved_mb": round(torch.cuda.max_memory_reserved(self.device) / 2**20, 1),
            }
        # ru_maxrss is in KiB on Linux: the process's peak RSS since it started.
        return {
            "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
