"""Putting packets back as they were read, for ``bench``'s repeated passes."""

from .. import config
from ..jit import kernel, lazy
from .layout import DATA, DATA_END, DATA_META

_memcpy = lazy("dataplane.kernels.memory", "memcpy")
#: Bytes from data put back: where a program that moves boundaries writes headers.
HEAD_BYTES = 128


@kernel(**config.KERNEL_JIT)
def restore_heads(buf, meta, saved_meta, heads, start, end):
    """Packets ``start .. end`` as read: their boundaries (data, data_end,
    data_meta) and the first HEAD_BYTES bytes from data (``heads[i]``). The
    kernel's BPF_PROG_TEST_RUN with a repeat count likewise gives every
    repetition the original packet."""
    for i in range(start, end):
        meta[DATA, i] = saved_meta[DATA, i]
        meta[DATA_END, i] = saved_meta[DATA_END, i]
        meta[DATA_META, i] = saved_meta[DATA_META, i]
        d = meta[DATA, i]
        if d + HEAD_BYTES <= buf.size:  # a constant length: LLVM inlines the copy
            _memcpy(buf, d, heads, i * HEAD_BYTES, HEAD_BYTES)
        else:
            _memcpy(buf, d, heads, i * HEAD_BYTES, buf.size - d)
