"""The kernel's jhash for programs (re-exported kernels: kernels/jhash.py)."""

from .kernels.jhash import (JHASH_INITVAL, jhash, jhash_1word, jhash_2words,  # noqa: F401
                            jhash_3words, jhash_words)
