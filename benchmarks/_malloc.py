"""``tune_malloc``, apart from the harness so that server peers can use it.

A server peer of bench_server.py imports nothing but its server library,
numpy and this module (see ``_server_peer.py``); ``_harness`` re-exports
:func:`tune_malloc` for the other scripts.
"""

from __future__ import annotations


def tune_malloc() -> bool:
    """Keep glibc's freed memory in the process (True if it worked).

    By default glibc serves blocks of ~1 MB and more with fresh ``mmap``s
    and trims the heap top once 2x the block size is free. A loop that
    allocates and frees 1 MB temporaries then takes a page fault for every
    4 KiB page, every time: in a VM, or on a small board, those faults cost
    far more than copying the bytes (measured: ~1.2 ms instead of ~0.1 ms
    for a 1 MiB byteswap into a new ``bytes``). Raising both thresholds
    (``mallopt(M_TRIM_THRESHOLD)``, ``mallopt(M_MMAP_THRESHOLD)``) shows the
    memory-copy floor; the default run measures what an untuned program
    gets. Must run before the measurements, and does nothing off glibc.
    """
    try:
        import ctypes
        import ctypes.util
        import platform

        name = ctypes.util.find_library("c")
        if name is None or platform.libc_ver()[0] != "glibc":
            return False
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_trim_threshold, 1 << 30)) and bool(
            libc.mallopt(m_mmap_threshold, 1 << 25)
        )
    except (OSError, AttributeError):
        return False
