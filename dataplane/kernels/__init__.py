"""Compiled (@njit) kernels only: no I/O, no Python objects, no policy."""
