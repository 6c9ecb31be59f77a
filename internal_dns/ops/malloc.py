"""glibc's allocator, kept from letting the resident size creep up in steps.

A full cache replaces its hash table whole now and then (a dict of a hundred thousand entries
that keeps adding and deleting is rebuilt, the same size, when its deleted slots run out): a new
block of megabytes, then the old one freed. glibc serves such blocks with mmap, and gives them
back on free, until the first one is freed: then it raises its mmap threshold to that size, and
serves the next ones from the heap, which keeps the freed blocks and cannot give them back while
smaller objects sit above them. The resident size then climbs a few MiB at a time for as long as
the server runs (seen in the soak: 93 → 100 MiB in seven minutes, with the caches already full).
A fixed threshold keeps every big block in mmap, given back when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt(3)
MMAP_THRESHOLD = 128 * 1024  # glibc's default, but fixed: no longer raised as blocks are freed


def fix_mmap_threshold() -> bool:
    """True when glibc took it; False on another C library (musl has no mallopt)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
