"""Point faiss's bundled OpenBLAS at the matrix kernels this CPU can run, before faiss is loaded.

The faiss-cpu wheel bundles OpenBLAS 0.3.15, which does not recognise CPUs newer than it and falls back to its
generic Prescott kernels: matrix products 3-5x slower than numpy's own, newer OpenBLAS on the same machine
(measured on the CI machine: exact search 8-13 GFLOPS, 38 with the AVX-512 kernels). Every exact search, k-means
training and inverted-file assignment goes through those products. OPENBLAS_CORETYPE names the kernels to use;
it is read when the library loads, so it is set on importing pss_ops, and only when the user has not set it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Kernel families OpenBLAS 0.3.15 knows, best first, with the CPU flags each needs (as /proc/cpuinfo spells them).
_KERNELS = (
    ("SkylakeX", {"avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512cd"}),
    ("Haswell", {"avx2", "fma"}),
)


def kernels_for(flags: set[str]) -> str | None:
    """The best OpenBLAS kernel family the CPU flags allow, or None to leave OpenBLAS's own detection."""
    return next((name for name, needed in _KERNELS if needed <= flags), None)


def prefer_detected_kernels(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """Set OPENBLAS_CORETYPE from the CPU's flags (x86-64 Linux only) unless set; the value used, if any."""
    if "OPENBLAS_CORETYPE" in os.environ:
        return os.environ["OPENBLAS_CORETYPE"]
    if platform.machine() not in ("x86_64", "AMD64") or not cpuinfo.exists():
        return None
    try:
        line = next((row for row in cpuinfo.read_text().splitlines() if row.startswith("flags")), "")
    except OSError:
        return None
    chosen = kernels_for(set(line.partition(":")[2].split()))
    if chosen is not None:
        os.environ["OPENBLAS_CORETYPE"] = chosen
    return chosen
