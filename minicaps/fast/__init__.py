"""What makes minicaps fast, behind one door: dispatch.py runs each op of minicaps/ops as
its reference or as a substitute with the same inputs and outputs, chosen by device and
shape, and holds the switch that runs the reference alone (MINICAPS_REFERENCE=1).

The substitutes: spectral.py (the DFT convolution), kernels.py (fused CuPy kernels),
tiles.py (reference ops over parts of their arrays in threads), predictions.py (the
predictions as large matrix products), with parallel.py's threads under them. Process
settings: allocator.py (reuse freed memory), idle_threads.py (OpenBLAS's idle threads).

This package's __init__ stays free of imports: minicaps/__init__.py imports
fast.idle_threads before NumPy loads."""
