"""uint8 frames from host memory to the model's device.

On CUDA a page-locked (pinned) staging buffer lets the copy run asynchronously by DMA. Pinning
memory is slow (it is a system call and a page-table walk), so the buffer is allocated once and
reused for every frame of the same size. The previous copy out of the buffer must have finished
before the buffer is overwritten; a CUDA event recorded after each copy guards that.
"""

from __future__ import annotations

import numpy as np
import torch


class FrameUploader:
    """Moves (B, H, W, 3) uint8 arrays to ``device`` as uint8 tensors (no dtype conversion on the host)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._staging: torch.Tensor | None = None
        self._copied: torch.cuda.Event | None = None

    def _staging_for(self, shape: tuple[int, ...]) -> torch.Tensor:
        if self._staging is None or tuple(self._staging.shape) != shape:
            if self._copied is not None:
                self._copied.synchronize()  # the old buffer may still be read by a pending copy
            self._staging = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
            self._copied = None
        return self._staging

    def upload(self, images: np.ndarray) -> torch.Tensor:
        """A uint8 tensor on the device holding ``images``; on the CPU, a zero-copy view when possible."""
        if self.device.type != "cuda":
            return torch.from_numpy(np.ascontiguousarray(images))
        staging = self._staging_for(tuple(images.shape))
        if self._copied is not None:
            self._copied.synchronize()
        np.copyto(staging.numpy(), images, casting="no")
        on_device = staging.to(self.device, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record(torch.cuda.current_stream(self.device))
        return on_device
