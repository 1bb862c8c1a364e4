"""Giving memory back to the operating system after large temporary allocations (exports, engine builds)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def return_freed_memory_to_os() -> None:
    """Collect garbage and ask glibc to hand freed heap pages back to the OS.

    Exporting ViT-B/16 to ONNX builds a model copy and a graph of ~400 MB that are freed
    afterwards, but glibc keeps freed pages mapped: without this the process RSS stays ~850 MB
    higher (measured). No-op where the C library has no ``malloc_trim`` (musl, macOS, Windows).
    """
    gc.collect()
    library = ctypes.util.find_library("c")
    if library is None:
        return
    trim = getattr(ctypes.CDLL(library), "malloc_trim", None)
    if trim is not None:
        trim(0)


#: A second path selection beside a serving process held a little more than the process itself
#: (ViT-B/16, 2-core Zen 5, with camera frames: 7 candidates, 2.2-2.4 GB serving and 4.6-4.8 GB peak;
#: 9 candidates with the bf16 last stage, 2.0-2.2 GB serving and 4.76 GB peak).
SECOND_SELECTION_FACTOR = 1.25
#: Free memory a machine keeps beyond that (the camera driver, the rest of the robot).
SELECTION_HEADROOM_BYTES = 512 * 1024 * 1024


def second_selection_memory_problem(process_rss: int, available: int) -> str | None:
    """Why choosing the inference path again inside a serving process (``process_rss`` bytes) would
    not fit in ``available`` bytes of free memory, or None when it fits."""
    needed = int(process_rss * SECOND_SELECTION_FACTOR) + SELECTION_HEADROOM_BYTES
    if available >= needed:
        return None
    return (f"it needs about {needed / 2**30:.1f} GB free beside this process "
            f"({process_rss / 2**30:.1f} GB) and {available / 2**30:.1f} GB are available")


def current_memory() -> tuple[int, int]:
    """(this process's resident bytes, the machine's available bytes)."""
    import psutil

    return psutil.Process().memory_info().rss, psutil.virtual_memory().available
