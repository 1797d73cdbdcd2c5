"""What makes minicaps fast: substitutes for reference ops with the same inputs and outputs
(the DFT convolution, fused CuPy kernels, tiles over threads) and process settings.

This package's __init__ stays free of imports: minicaps/__init__.py imports
fast.idle_threads before NumPy loads."""
