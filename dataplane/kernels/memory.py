"""Raw memory intrinsics for kernels: memcpy, prefetch, unaligned loads.

``out[a:b] = src[c:d]`` costs ~180 ns for 700 bytes in numba; ``llvm.memcpy``
costs ~19 ns (io-notes.md). Prefetching the next packets' headers halves the
cost of streaming a batch (numba-notes.md). Callers check bounds: these do not.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _byte_pointer(context, builder, arrty, arr, offset):
    ary = context.make_array(arrty)(context, builder, arr)
    base = builder.bitcast(ary.data, ir.IntType(8).as_pointer())
    return builder.gep(base, [offset])


@intrinsic
def memcpy(typingctx, dst, dst_off, src, src_off, length):
    """Copy ``length`` bytes from ``src[src_off:]`` to ``dst[dst_off:]`` (unchecked)."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)):
        return None
    sig = types.void(dst, dst_off, src, src_off, length)

    def codegen(context, builder, signature, args):
        d, doff, s, soff, n = args
        i64 = ir.IntType(64)
        doff = context.cast(builder, doff, signature.args[1], types.int64)
        soff = context.cast(builder, soff, signature.args[3], types.int64)
        n = context.cast(builder, n, signature.args[4], types.int64)
        dp = _byte_pointer(context, builder, signature.args[0], d, doff)
        sp = _byte_pointer(context, builder, signature.args[2], s, soff)
        cgutils.raw_memcpy(builder, dp, sp, builder.zext(n, i64) if n.type != i64 else n, 1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def prefetch(typingctx, arr, offset):
    """Hint the CPU to load the cache line at ``arr[offset]`` (llvm.prefetch, read)."""
    if not isinstance(arr, types.Array):
        return None
    sig = types.void(arr, offset)

    def codegen(context, builder, signature, args):
        off = context.cast(builder, args[1], signature.args[1], types.int64)
        _prefetch_line(builder, _byte_pointer(context, builder, signature.args[0], args[0], off))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def prefetch_address(typingctx, addr):
    """prefetch() of the line at the int64 address ``addr`` (a hint: it never faults)."""
    def codegen(context, builder, signature, args):
        addr = context.cast(builder, args[0], signature.args[0], types.int64)
        _prefetch_line(builder, builder.inttoptr(addr, ir.IntType(8).as_pointer()))
        return context.get_dummy_value()

    return types.void(addr), codegen


def _prefetch_line(builder, p):
    """llvm.prefetch of i8* ``p``: a read, into every cache level."""
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [p.type, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
    builder.call(fn, [p, i32(0), i32(3), i32(1)])


@intrinsic
def byte_address(typingctx, arr, offset):
    """The int64 address of byte ``offset`` of ``arr``'s data (unchecked)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        off = context.cast(builder, args[1], signature.args[1], types.int64)
        p = _byte_pointer(context, builder, signature.args[0], args[0], off)
        return builder.ptrtoint(p, ir.IntType(64))

    return types.int64(arr, offset), codegen


@intrinsic
def load32(typingctx, arr, offset):
    """One unaligned 32-bit load of ``arr[offset:offset + 4]`` in host order (unchecked).

    Indexing byte by byte costs four loads, each with its own negative-index
    fix-up that keeps LLVM from merging them.
    """
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        off = context.cast(builder, args[1], signature.args[1], types.int64)
        p = _byte_pointer(context, builder, signature.args[0], args[0], off)
        v = builder.load(builder.bitcast(p, ir.IntType(32).as_pointer()), align=1)
        return builder.zext(v, ir.IntType(64))

    return types.int64(arr, offset), codegen


@intrinsic
def as_pointer(typingctx, addr, dtype):
    """The int64 ``addr`` as a pointer to ``dtype`` values (a numpy scalar type,
    or a dtype constant: records)."""
    if isinstance(dtype, types.NumberClass):
        ptrty = types.CPointer(dtype.instance_type)
    elif isinstance(dtype, types.DType):
        ptrty = types.CPointer(dtype.dtype)
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptrty))

    return ptrty(addr, dtype), codegen


@intrinsic
def view_bytes(typingctx, buf, offset, dtype, shape):
    """A C-contiguous array of ``dtype`` and ``shape`` over ``buf[offset:]`` (no
    copy, no check: the caller's layout guarantees the bytes are there). ``dtype``
    is a numpy scalar type or a dtype constant (records), ``shape`` a tuple."""
    if isinstance(dtype, types.NumberClass):
        dt = dtype.instance_type
    elif isinstance(dtype, types.DType):
        dt = dtype.dtype
    else:
        return None
    if not (isinstance(buf, types.Array) and isinstance(shape, types.UniTuple)):
        return None
    arrty = types.Array(dt, shape.count, "C")

    def codegen(context, builder, signature, args):
        from numba.np.arrayobj import populate_array

        off = context.cast(builder, args[1], signature.args[1], types.int64)
        base = _byte_pointer(context, builder, signature.args[0], args[0], off)
        out = context.make_array(arrty)(context, builder)
        intp = context.get_value_type(types.intp)
        dims = [context.cast(builder, d, signature.args[3].dtype, types.intp)
                for d in cgutils.unpack_tuple(builder, args[3])]
        itemsize = context.get_abi_sizeof(context.get_data_type(dt))
        strides, stride = [], ir.Constant(intp, itemsize)
        for d in reversed(dims):
            strides.insert(0, stride)
            stride = builder.mul(stride, d)
        populate_array(out, data=builder.bitcast(base, out.data.type), shape=dims,
                       strides=strides, itemsize=ir.Constant(intp, itemsize), meminfo=None)
        return out._getvalue()

    return arrty(buf, offset, dtype, shape), codegen


@intrinsic
def atomic_add(typingctx, arr, index, delta):
    """``__sync_fetch_and_add(&arr[index], delta)``: an atomic add (LLVM atomicrmw,
    sequentially consistent) on an integer array element; returns the old value.
    Unchecked: callers pass a valid index (a map value's one-element view)."""
    if not (isinstance(arr, types.Array) and isinstance(arr.dtype, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        arrty, idxty, dty = signature.args
        ary = context.make_array(arrty)(context, builder, args[0])
        idx = context.cast(builder, args[1], idxty, types.intp)
        ptr = builder.gep(ary.data, [idx])
        d = context.cast(builder, args[2], dty, arrty.dtype)
        return builder.atomic_rmw("add", ptr, d, "seq_cst")

    return arr.dtype(arr, index, delta), codegen


def _int64_element(context, builder, signature, args):
    arrty, idxty = signature.args[:2]
    ary = context.make_array(arrty)(context, builder, args[0])
    idx = context.cast(builder, args[1], idxty, types.intp)
    return builder.gep(ary.data, [idx])


def _is_int64_array(arr):
    return isinstance(arr, types.Array) and arr.dtype == types.int64


def _is_word_array(arr):
    return isinstance(arr, types.Array) and arr.dtype in (types.int64, types.uint64)


@intrinsic
def load_acquire(typingctx, arr, index):
    """``arr[index]`` of an int64 array, an acquire load (the other side's release)."""
    if not _is_int64_array(arr):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_int64_element(context, builder, signature, args),
                                   "acquire", 8)

    return types.int64(arr, index), codegen


@intrinsic
def store_release(typingctx, arr, index, value):
    """``arr[index] = value`` of an int64 or uint64 array, a release store:
    every store before it is visible to a reader that sees this one."""
    if not _is_word_array(arr):
        return None

    def codegen(context, builder, signature, args):
        v = context.cast(builder, args[2], signature.args[2], signature.args[0].dtype)
        builder.store_atomic(v, _int64_element(context, builder, signature, args), "release", 8)
        return context.get_dummy_value()

    return types.void(arr, index, value), codegen


def _take(builder, ptr):
    """The lock word 0 -> 1 (acquire): an i1, true when this thread took it."""
    i64 = ir.IntType(64)
    return builder.extract_value(builder.cmpxchg(ptr, i64(0), i64(1), "acquire", "monotonic"),
                                 1)


@intrinsic
def spin_lock(typingctx, arr, index):
    """Take the spin lock in int64 ``arr[index]`` (0 free, 1 held): the kernel's
    raw_spin_lock on a map's or a ring's lock word. Test-and-test-and-set, so a
    waiting worker spins on its cached copy of the line, not on the bus."""
    if not _is_int64_array(arr):
        return None

    def codegen(context, builder, signature, args):
        ptr = _int64_element(context, builder, signature, args)
        i64 = ir.IntType(64)
        fn = builder.function
        try_bb, wait_bb, done_bb = (fn.append_basic_block(n) for n in
                                    ("lock.try", "lock.wait", "lock.done"))
        builder.branch(try_bb)
        builder.position_at_end(try_bb)
        builder.cbranch(_take(builder, ptr), done_bb, wait_bb)
        builder.position_at_end(wait_bb)
        held = builder.load_atomic(ptr, "monotonic", 8)
        builder.cbranch(builder.icmp_signed("==", held, i64(0)), try_bb, wait_bb)
        builder.position_at_end(done_bb)
        return context.get_dummy_value()

    return types.void(arr, index), codegen


@intrinsic
def spin_trylock(typingctx, arr, index):
    """One attempt at the spin lock in ``arr[index]``: True when it was taken."""
    if not _is_int64_array(arr):
        return None

    def codegen(context, builder, signature, args):
        return _take(builder, _int64_element(context, builder, signature, args))

    return types.boolean(arr, index), codegen


@intrinsic
def spin_unlock(typingctx, arr, index):
    """Release the spin lock in ``arr[index]`` (a release store of 0)."""
    if not _is_int64_array(arr):
        return None

    def codegen(context, builder, signature, args):
        ptr = _int64_element(context, builder, signature, args)
        builder.store_atomic(ir.Constant(ir.IntType(64), 0), ptr, "release", 8)
        return context.get_dummy_value()

    return types.void(arr, index), codegen


@intrinsic
def crc32_u64(typingctx, crc, word):
    """``crc32q``: the CRC32C of ``word`` continuing ``crc`` (x86-64 with SSE4.2:
    htab.HOST_CRC32C says whether the host has it)."""
    sig = types.uint64(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        crc = context.cast(builder, args[0], signature.args[0], types.uint64)
        w = context.cast(builder, args[1], signature.args[1], types.uint64)
        fnty = ir.FunctionType(i64, [i64, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse42.crc32.64.64")
        return builder.call(fn, [crc, w])

    return sig, codegen
