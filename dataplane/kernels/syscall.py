"""libc system calls and memory fences for the live I/O kernels (kernels/tpacket.py).

The one place compiled code talks to the operating system: the live path's
batch loops write frames to a TAP, read frames from it and hand batches to
``sendmmsg`` without going back to Python per frame (a Python call per frame
costs ~0.5 us, more than the system call's own work; io-notes.md). Each
intrinsic declares the libc symbol in the kernel's LLVM module: the native
shared object (native.py) links it against libc, numba's JIT resolves it in
the process. ``errno`` is read through ``__errno_location`` (glibc and musl).

Imported only when a kernel is compiled (``lazy`` references), like memory.py.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .memory import _byte_pointer


def _i64(context, builder, value, ty):
    return context.cast(builder, value, ty, types.int64)


def _libc(builder, name, ret, args):
    fnty = ir.FunctionType(ret, args)
    return cgutils.get_or_insert_function(builder.module, fnty, name)


def _fd_buffer_call(name, doc):
    """An intrinsic ``name(fd, arr, off, length)`` calling libc's ``name(fd,
    &arr[off], length)`` (read and write have the same shape)."""
    @intrinsic
    def call(typingctx, fd, arr, off, length):
        if not isinstance(arr, types.Array):
            return None

        def codegen(context, builder, signature, args):
            i32, i64 = ir.IntType(32), ir.IntType(64)
            p = _byte_pointer(context, builder, signature.args[1], args[1],
                              _i64(context, builder, args[2], signature.args[2]))
            fn = _libc(builder, name, i64, [i32, p.type, i64])
            fdv = builder.trunc(_i64(context, builder, args[0], signature.args[0]), i32)
            return builder.call(fn, [fdv, p, _i64(context, builder, args[3], signature.args[3])])

        return types.int64(fd, arr, off, length), codegen
    call.__doc__ = doc
    return call


sys_write = _fd_buffer_call(
    "write", "``write(fd, &arr[off], length)``: bytes written, or -1 (see ``sys_errno``).")
sys_read = _fd_buffer_call(
    "read", "``read(fd, &arr[off], length)``: bytes read, 0, or -1 (see ``sys_errno``).")


@intrinsic
def sys_sendmmsg(typingctx, fd, hdrs, n, flags):
    """``sendmmsg(fd, hdrs, n, flags)`` with ``hdrs`` an int64 array holding ``n``
    ``struct mmsghdr`` (8 words each): messages sent, or -1 (see ``sys_errno``)."""
    if not isinstance(hdrs, types.Array):
        return None

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        p = _byte_pointer(context, builder, signature.args[1], args[1], i64(0))
        fn = _libc(builder, "sendmmsg", i32, [i32, p.type, i32, i32])
        fdv = builder.trunc(_i64(context, builder, args[0], signature.args[0]), i32)
        nv = builder.trunc(_i64(context, builder, args[2], signature.args[2]), i32)
        fl = builder.trunc(_i64(context, builder, args[3], signature.args[3]), i32)
        return builder.sext(builder.call(fn, [fdv, p, nv, fl]), i64)

    return types.int64(fd, hdrs, n, flags), codegen


@intrinsic
def sys_errno(typingctx):
    """The calling thread's ``errno``."""
    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        fn = _libc(builder, "__errno_location", i32.as_pointer(), [])
        return builder.sext(builder.load(builder.call(fn, [])), ir.IntType(64))

    return types.int64(), codegen


def _word32(context, builder, signature, args):
    """Pointer to the 32-bit word at byte ``args[1]`` of array ``args[0]``."""
    p = _byte_pointer(context, builder, signature.args[0], args[0],
                      _i64(context, builder, args[1], signature.args[1]))
    return builder.bitcast(p, ir.IntType(32).as_pointer())


@intrinsic
def load32_acquire(typingctx, arr, offset):
    """An acquire load of the 32-bit word at ``arr[offset]`` (aligned, unchecked):
    reads after it see what the writer stored before its release (the kernel's
    ``smp_wmb`` then ``block_status = TP_STATUS_USER``)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        v = builder.load_atomic(_word32(context, builder, signature, args), "acquire", 4)
        return builder.zext(v, ir.IntType(64))

    return types.int64(arr, offset), codegen


@intrinsic
def store32_release(typingctx, arr, offset, value):
    """A release store of a 32-bit word at ``arr[offset]`` (aligned, unchecked): the
    reads and writes before it are done before the other side sees the value
    (handing a ring block or frame back to the kernel)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        v = builder.trunc(_i64(context, builder, args[2], signature.args[2]), ir.IntType(32))
        builder.store_atomic(v, _word32(context, builder, signature, args), "release", 4)
        return context.get_dummy_value()

    return types.void(arr, offset, value), codegen
