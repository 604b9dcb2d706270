"""Root pytest configuration: decide, before Numba is imported anywhere, whether CUDA kernels
run on a real GPU or in Numba's CUDA simulator."""

import ctypes.util
import os


def _has_cuda_driver() -> bool:
    return ctypes.util.find_library("cuda") is not None or os.path.exists("/dev/nvidiactl")


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _has_cuda_driver():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
