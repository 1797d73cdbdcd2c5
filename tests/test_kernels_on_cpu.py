"""The fused im2col and col2im kernels' arithmetic, checked without a GPU.

Their bodies are C++ (minicaps/fast/kernels.py), and all of what can go wrong in them is index
arithmetic. Here each body is compiled by the host's C++ compiler inside a loop that does
what CuPy's ElementwiseKernel does (the thread index i, a reference to the output element
i, the raw input as a pointer), with the same preamble, and run on NumPy arrays against
the reference: so CI, which has no GPU, still checks the kernels' indexing.
tests/test_kernels.py runs the kernels themselves where a GPU is. Skipped where no C++
compiler is found."""
import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minicaps.fast import kernels
from minicaps.ops.conv import add_columns, columns, output_size

from test_kernels import column_problems

COMPILER = shutil.which("c++") or shutil.which("g++")
pytestmark = pytest.mark.skipif(COMPILER is None, reason="needs a C++ compiler")
C_TYPES = {np.float32: "float", np.float64: "double"}

# One element per loop turn, as one CUDA thread per element does it.
LOOP = """
typedef {c_type} T;
{preamble}
extern "C" void run(const T* {raw}, T* out_elements, long long size) {{
    for (long long i = 0; i < size; ++i) {{
        T& {out} = out_elements[i];
        {body}
    }}
}}
"""
_built = {}
_build_dir = tempfile.TemporaryDirectory()


def host_kernel(body, raw, out, dtype, index, constants):
    """The kernel body as a host function run(raw input, output, size), built once."""
    key = (body, dtype, index, tuple(sorted(constants.items())))
    if key not in _built:
        source = LOOP.format(c_type=C_TYPES[dtype], preamble=kernels.preamble(index, constants),
                             raw=raw, out=out, body=body)
        library = Path(_build_dir.name) / f"kernel{len(_built)}.so"
        subprocess.run([COMPILER, "-O1", "-shared", "-fPIC", "-x", "c++", "-", "-o",
                        str(library)], input=source.encode(), check=True)
        _built[key] = ctypes.CDLL(str(library)).run
    return _built[key]


def run(function, raw_input, output):
    raw_input, pointer = np.ascontiguousarray(raw_input), ctypes.c_void_p
    function.argtypes = [pointer, pointer, ctypes.c_longlong]
    function(raw_input.ctypes.data, output.ctypes.data, output.size)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=column_problems(device="cpu"), index=st.sampled_from(["int32", "int64"]))
def test_the_im2col_and_col2im_bodies_equal_the_reference(problem, index):
    xt, kh, kw, stride = problem
    _, H, W, _ = xt.shape
    oh, ow = output_size(H, kh, stride, 0), output_size(W, kw, stride, 0)
    constants = kernels.column_constants(xt.shape, kh, kw, oh, ow, stride)
    expected = columns(xt, kh, kw, oh, ow, stride)
    cols = np.full_like(expected, np.nan)
    run(host_kernel(kernels.IM2COL, "xt", "cols", xt.dtype.type, index, constants), xt, cols)
    np.testing.assert_array_equal(cols, expected)

    dcols = np.random.default_rng(1).standard_normal(cols.shape).astype(xt.dtype)
    dxt = np.random.default_rng(2).standard_normal(xt.shape).astype(xt.dtype)
    expected_dxt = dxt.copy()  # both add into what is there already
    add_columns(expected_dxt, dcols, stride)
    run(host_kernel(kernels.ADD_COLUMNS, "dcols", "dxt", xt.dtype.type, index, constants),
        dcols, dxt)
    np.testing.assert_array_equal(dxt, expected_dxt)
