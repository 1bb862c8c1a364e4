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
