"""The program's view of a packet: ``struct xdp_md`` and a bounds-checked byte view.

A program receives ``ctx`` (the kernel's ``struct xdp_md``) and reads
``ctx.pkt``: the bytes from data to data_end as a checked view. ``len(pkt)``,
``pkt[i]`` (an int64 in 0..255) and ``pkt[i] = v`` (the low 8 bits of v) check
``0 <= i < len(pkt)`` with one unsigned compare; an access outside sets the
packet's fault flag and reads 0 / writes nothing, so the runner can turn the
verdict into XDP_ABORTED without the process ever touching another packet's
bytes. With the usual guards in the program (``if off + 4 > len(pkt)``) LLVM
removes the checks (numba-notes.md: cost equal to an unchecked pointer).

The raw pointers inside these types are not exposed as attributes: a program
cannot reach memory other than its packet through them.

The unchecked variants (``make_xdp_md_unchecked``) drop the bounds checks:
``--unchecked``, for programs trusted to guard every access; bench measures
what the checks cost.
"""

import operator

from llvmlite import ir
from numba import types
from numba.core import cgutils
from . import layout
from .memory import _byte_pointer
from numba.extending import (intrinsic, make_attribute_wrapper, models, overload,
                             overload_attribute, register_model)


class PacketViewType(types.Type):
    """A view of one packet's bytes (data .. data_end), bounds-checked unless not ``checked``."""

    def __init__(self, checked=True):
        self.checked = checked
        super().__init__(name="xdp_packet" if checked else "xdp_packet_unchecked")


class XdpMdType(types.Type):
    """``struct xdp_md``: the program's context for one packet."""

    def __init__(self, checked=True):
        self.checked = checked
        super().__init__(name="xdp_md" if checked else "xdp_md_unchecked")


packet_view, packet_view_unchecked = PacketViewType(True), PacketViewType(False)
xdp_md, xdp_md_unchecked = XdpMdType(True), XdpMdType(False)
_u8p = types.CPointer(types.uint8)
_i64p = types.CPointer(types.int64)


@register_model(PacketViewType)
class _PacketViewModel(models.StructModel):
    def __init__(self, dmm, fe_type):
        members = [("base", _u8p), ("length", types.int64), ("fault", _i64p)]
        super().__init__(dmm, fe_type, members)


@register_model(XdpMdType)
class _XdpMdModel(models.StructModel):
    def __init__(self, dmm, fe_type):
        members = [
            ("buf", _u8p),                 # batch buffer
            ("data", _i64p),               # &batch.data[i]: adjust_head moves it
            ("data_end", _i64p),           # &batch.data_end[i]
            ("data_meta", _i64p),          # &batch.data_meta[i]: adjust_meta moves it
            ("frame_start", types.int64),  # slot bounds (headroom / tailroom limits)
            ("frame_end", types.int64),
            ("ingress_ifindex", types.uint32),
            ("rx_queue_index", types.uint32),
            ("fault", _i64p),              # set by any out-of-bounds access
        ]
        super().__init__(dmm, fe_type, members)


# Only the kernel's public xdp_md fields are attributes.
make_attribute_wrapper(XdpMdType, "ingress_ifindex", "ingress_ifindex")
make_attribute_wrapper(XdpMdType, "rx_queue_index", "rx_queue_index")


def _meta_ptr(context, builder, metaty, meta, row, index, indexty):
    """Pointer to meta[row, index] of a C-contiguous int64 2-D array."""
    ary = context.make_array(metaty)(context, builder, meta)
    ncols = cgutils.unpack_tuple(builder, ary.shape, 2)[1]
    idx = context.cast(builder, index, indexty, types.int64)
    flat = builder.add(builder.mul(ir.Constant(ncols.type, row), ncols), idx)
    return builder.gep(ary.data, [flat])


def _make_xdp_md(ctxty):
    """An intrinsic building a context of type ``ctxty`` (checked or not)."""
    def make(typingctx, buf, meta, scratch, i):
        if not (isinstance(meta, types.Array) and meta.ndim == 2 and meta.dtype == types.int64
                and meta.layout == "C"):
            return None
        sig = ctxty(buf, meta, scratch, i)

        def codegen(context, builder, signature, args):
            bufty, metaty, scratchty, ity = signature.args
            buf_v, meta_v, scratch_v, i_v = args

            def ptr(row):
                return _meta_ptr(context, builder, metaty, meta_v, row, i_v, ity)

            ctx = cgutils.create_struct_proxy(ctxty)(context, builder)
            ctx.buf = context.make_array(bufty)(context, builder, buf_v).data
            ctx.data = ptr(layout.DATA)
            ctx.data_end = ptr(layout.DATA_END)
            ctx.data_meta = ptr(layout.DATA_META)
            ctx.frame_start = builder.load(ptr(layout.FRAME_START))
            ctx.frame_end = builder.load(ptr(layout.FRAME_END))
            i32 = ir.IntType(32)
            ctx.ingress_ifindex = builder.trunc(builder.load(ptr(layout.IFINDEX)), i32)
            ctx.rx_queue_index = builder.trunc(builder.load(ptr(layout.RX_QUEUE)), i32)
            scratch_data = context.make_array(scratchty)(context, builder, scratch_v).data
            fault_slot = ir.Constant(ir.IntType(64), layout.SCRATCH_FAULT)
            ctx.fault = builder.gep(scratch_data, [fault_slot])
            return ctx._getvalue()

        return sig, codegen
    return intrinsic(make)


#: make_xdp_md(buf, meta, scratch, i): packet ``i``'s context from a batch's buffer
#: and meta rows (runner only); the fault flag is ``scratch[SCRATCH_FAULT]``.
make_xdp_md = _make_xdp_md(xdp_md)
make_xdp_md_unchecked = _make_xdp_md(xdp_md_unchecked)


def _view_intrinsic(first, last):
    """An intrinsic ``(ctx) -> view`` of the bytes between two of its boundaries."""
    @intrinsic
    def view_of(typingctx, ctx):
        if not isinstance(ctx, XdpMdType):
            return None
        viewty = packet_view if ctx.checked else packet_view_unchecked

        def codegen(context, builder, signature, args):
            c = cgutils.create_struct_proxy(ctx)(context, builder, value=args[0])
            start = builder.load(getattr(c, first))
            view = cgutils.create_struct_proxy(viewty)(context, builder)
            view.base = builder.gep(c.buf, [start])
            view.length = builder.sub(builder.load(getattr(c, last)), start)
            view.fault = c.fault
            return view._getvalue()

        return viewty(ctx), codegen
    return view_of


_ctx_packet = _view_intrinsic("data", "data_end")
_ctx_metadata = _view_intrinsic("data_meta", "data")


@overload_attribute(XdpMdType, "pkt")
def _xdp_md_pkt(ctx):
    """``ctx.pkt``: the packet bytes from data to data_end (re-read after adjust_head)."""
    return lambda ctx: _ctx_packet(ctx)


@overload_attribute(XdpMdType, "meta")
def _xdp_md_meta(ctx):
    """``ctx.meta``: the metadata bytes from data_meta to data (bpf_xdp_adjust_meta)."""
    return lambda ctx: _ctx_metadata(ctx)


# -- for helpers (kernels/xdp.py) only: programs reach none of these -------

_FIELDS = ("data_meta", "data", "data_end")


@intrinsic
def ctx_bounds(typingctx, ctx):
    """(data_meta, data, data_end, frame_start, frame_end) as buffer offsets."""
    if not isinstance(ctx, XdpMdType):
        return None
    sig = types.UniTuple(types.int64, 5)(ctx)

    def codegen(context, builder, signature, args):
        c = cgutils.create_struct_proxy(ctx)(context, builder, value=args[0])
        vals = [builder.load(c.data_meta), builder.load(c.data), builder.load(c.data_end),
                c.frame_start, c.frame_end]
        return context.make_tuple(builder, signature.return_type, vals)

    return sig, codegen


def _ctx_store(field):
    @intrinsic
    def store(typingctx, ctx, value):
        if not isinstance(ctx, XdpMdType):
            return None

        def codegen(context, builder, signature, args):
            c = cgutils.create_struct_proxy(ctx)(context, builder, value=args[0])
            v = context.cast(builder, args[1], signature.args[1], types.int64)
            builder.store(v, getattr(c, field))
            return context.get_dummy_value()

        return types.void(ctx, value), codegen
    return store


set_data_meta, set_data, set_data_end = (_ctx_store(f) for f in _FIELDS)


@intrinsic
def ctx_memmove(typingctx, ctx, dst, src, length):
    """memmove inside the batch buffer (offsets checked by the caller)."""
    if not isinstance(ctx, XdpMdType):
        return None

    def codegen(context, builder, signature, args):
        c = cgutils.create_struct_proxy(ctx)(context, builder, value=args[0])
        i64 = types.int64
        d, s_, n = (context.cast(builder, a, t, i64)
                    for a, t in zip(args[1:], signature.args[1:]))
        cgutils.raw_memmove(builder, builder.gep(c.buf, [d]), builder.gep(c.buf, [s_]), n, 1)
        return context.get_dummy_value()

    return types.void(ctx, dst, src, length), codegen


@intrinsic
def ctx_address(typingctx, ctx, offset):
    """The address of byte ``offset`` of the batch buffer (checked by the caller)."""
    if not isinstance(ctx, XdpMdType):
        return None

    def codegen(context, builder, signature, args):
        c = cgutils.create_struct_proxy(ctx)(context, builder, value=args[0])
        off = context.cast(builder, args[1], signature.args[1], types.int64)
        return builder.ptrtoint(builder.gep(c.buf, [off]), ir.IntType(64))

    return types.int64(ctx, offset), codegen


@intrinsic
def ctx_memzero(typingctx, ctx, start, length):
    """Zero bytes of the batch buffer (offsets checked by the caller)."""
    if not isinstance(ctx, XdpMdType):
        return None

    def codegen(context, builder, signature, args):
        c = cgutils.create_struct_proxy(ctx)(context, builder, value=args[0])
        st = context.cast(builder, args[1], signature.args[1], types.int64)
        n = context.cast(builder, args[2], signature.args[2], types.int64)
        cgutils.memset(builder, builder.gep(c.buf, [st]), n, 0)
        return context.get_dummy_value()

    return types.void(ctx, start, length), codegen


@intrinsic
def _view_len(typingctx, view):
    if not isinstance(view, PacketViewType):
        return None

    def codegen(context, builder, signature, args):
        return cgutils.create_struct_proxy(view)(context, builder, value=args[0]).length

    return types.int64(view), codegen


@overload(len)
def _len_packet(view):
    if isinstance(view, PacketViewType):
        return lambda view: _view_len(view)


def _checked_pointer(context, builder, viewty, view_value, index, indexty):
    """Return (in_bounds, byte pointer, view proxy) for view[index]."""
    view = cgutils.create_struct_proxy(viewty)(context, builder, value=view_value)
    idx = context.cast(builder, index, indexty, types.int64)
    if not viewty.checked:
        return ir.Constant(ir.IntType(1), 1), builder.gep(view.base, [idx]), view
    # One unsigned compare rejects both negative and too-large indices.
    ok = builder.icmp_unsigned("<", idx, view.length)
    return ok, builder.gep(view.base, [idx]), view


def _set_fault(builder, view):
    builder.store(ir.Constant(ir.IntType(64), 1), view.fault)


@intrinsic
def _view_load(typingctx, view, index):
    if not (isinstance(view, PacketViewType) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ok, ptr, v = _checked_pointer(context, builder, signature.args[0], args[0], args[1],
                                      signature.args[1])
        i64 = ir.IntType(64)
        with builder.if_else(ok, likely=True) as (then, otherwise):
            with then:
                bb_then = builder.block
                val = builder.zext(builder.load(ptr), i64)
            with otherwise:
                bb_else = builder.block
                _set_fault(builder, v)
        phi = builder.phi(i64)
        phi.add_incoming(val, bb_then)
        phi.add_incoming(i64(0), bb_else)
        return phi

    return types.int64(view, index), codegen


@intrinsic
def _view_store(typingctx, view, index, value):
    if not (isinstance(view, PacketViewType) and isinstance(index, types.Integer)
            and isinstance(value, (types.Integer, types.Boolean))):
        return None

    def codegen(context, builder, signature, args):
        ok, ptr, v = _checked_pointer(context, builder, signature.args[0], args[0], args[1],
                                      signature.args[1])
        byte = context.cast(builder, args[2], signature.args[2], types.int64)
        with builder.if_else(ok, likely=True) as (then, otherwise):
            with then:
                builder.store(builder.trunc(byte, ir.IntType(8)), ptr)
            with otherwise:
                _set_fault(builder, v)
        return context.get_dummy_value()

    return types.void(view, index, value), codegen


def _raw_bytes(viewty):
    """Whether ``viewty`` is what the big-endian accessors below take: a packet
    view or a C-contiguous uint8 array."""
    return isinstance(viewty, PacketViewType) or (
        isinstance(viewty, types.Array) and viewty.dtype == types.uint8 and viewty.ndim == 1
        and viewty.layout == "C")


def _raw_pointer(context, builder, viewty, view, indexty, index, width):
    """An i<width>* to byte ``index`` of a packet view or a uint8 array."""
    idx = context.cast(builder, index, indexty, types.int64)
    if isinstance(viewty, PacketViewType):
        base = cgutils.create_struct_proxy(viewty)(context, builder, value=view).base
        p = builder.gep(base, [idx])
    else:
        p = _byte_pointer(context, builder, viewty, view, idx)
    return builder.bitcast(p, ir.IntType(width).as_pointer())


def _load_be(width):
    """An intrinsic: the big-endian ``width``-bit value at ``view[index]`` (int64,
    uint64 for 64 bits), one unaligned byte-swapped load, unchecked: the caller
    proved the bytes are there (parse.header_fits). Byte by byte, LLVM merged
    some loads and not others."""
    result = types.uint64 if width == 64 else types.int64

    def load(typingctx, view, index):
        if not (_raw_bytes(view) and isinstance(index, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            ptr = _raw_pointer(context, builder, signature.args[0], args[0], signature.args[1],
                               args[1], width)
            v = builder.bswap(builder.load(ptr, align=1))
            return builder.zext(v, ir.IntType(64)) if width < 64 else v

        return result(view, index), codegen

    load.__name__ = f"load_be{width}_unchecked"
    return intrinsic(load)


def _store_be(width):
    """An intrinsic storing the low ``width`` bits of a value big-endian at
    ``view[index]``, one unaligned byte-swapped store, unchecked as _load_be's
    loads (l4lb's outer Ethernet header was four byte stores)."""
    def store(typingctx, view, index, value):
        if not (_raw_bytes(view) and isinstance(index, types.Integer)
                and isinstance(value, (types.Integer, types.Boolean))):
            return None

        def codegen(context, builder, signature, args):
            ptr = _raw_pointer(context, builder, signature.args[0], args[0], signature.args[1],
                               args[1], width)
            v = context.cast(builder, args[2], signature.args[2], types.uint64)
            if width < 64:
                v = builder.trunc(v, ir.IntType(width))
            builder.store(builder.bswap(v), ptr, align=1)
            return context.get_dummy_value()

        return types.void(view, index, value), codegen

    store.__name__ = f"store_be{width}_unchecked"
    return intrinsic(store)


load_be16_unchecked, load_be32_unchecked, load_be64_unchecked = map(_load_be, (16, 32, 64))
store_be16_unchecked, store_be32_unchecked, store_be64_unchecked = map(_store_be, (16, 32, 64))


@overload(operator.getitem)
def _getitem_packet(view, index):
    if isinstance(view, PacketViewType) and isinstance(index, types.Integer):
        return lambda view, index: _view_load(view, index)


@overload(operator.setitem)
def _setitem_packet(view, index, value):
    if isinstance(view, PacketViewType) and isinstance(index, types.Integer):
        return lambda view, index, value: _view_store(view, index, value)
