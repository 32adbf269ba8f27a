"""How a process that trains or runs networks on the CPU should keep its freed memory."""
from __future__ import annotations

__all__ = ["tune_allocator"]


def tune_allocator() -> None:
    """Keep freed memory inside glibc's allocator instead of returning it to the kernel.

    Measured here (results/export/inference_benchmark.md): with glibc's defaults,
    CPU inference and training at batch 32 spend about half their time mapping and
    unmapping large activation buffers; this is the in-process form of
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``.  A no-op where glibc is absent.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: never serve large blocks with mmap
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: never give freed heap back
    except (OSError, AttributeError):
        pass
