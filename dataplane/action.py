"""XDP verdicts with the kernel's values (enum xdp_action in include/uapi/linux/bpf.h)."""

import enum

XDP_ABORTED = 0
XDP_DROP = 1
XDP_PASS = 2
XDP_TX = 3
XDP_REDIRECT = 4


class XdpAction(enum.IntEnum):
    """The kernel's ``enum xdp_action``; a program returns one of these."""

    XDP_ABORTED = XDP_ABORTED
    XDP_DROP = XDP_DROP
    XDP_PASS = XDP_PASS
    XDP_TX = XDP_TX
    XDP_REDIRECT = XDP_REDIRECT

    @property
    def short(self):
        """The lower-case name used in file names and JSON keys (``drop``)."""
        return self.name[4:].lower()


#: Verdict names in kernel order, as used for JSON keys and output file names.
ACTION_NAMES = tuple(a.short for a in XdpAction)


def invalid_verdict_text(code):
    """Why a program's return value ``code`` (its low 32 bits, the kernel's
    u32) was no verdict: the kernel's bpf_warn_invalid_xdp_action cases."""
    if code == XDP_REDIRECT:
        return "returned XDP_REDIRECT without a target (no bpf_redirect call)"
    if code < XDP_REDIRECT:
        return f"returned {code} with a redirect target in the upper 32 bits"
    return f"returned {code}, no XDP action"


#: bpf_redirect_map's flags beside the fallback action in its low two bits
#: (BPF_F_ACTION_MASK): redirect to every device of the map, and not to the
#: packet's ingress device (include/uapi/linux/bpf.h).
BPF_F_BROADCAST = 1 << 3
BPF_F_EXCLUDE_INGRESS = 1 << 4
