"""bpf_redirect_map with BPF_F_BROADCAST: a frame redirected to every device of
a DEVMAP / DEVMAP_HASH, but its ingress device with BPF_F_EXCLUDE_INGRESS (the
kernel's dev_map_enqueue_multi, which clones it for each).

A compiled program returns one target a packet (batch.redirect), so a
broadcast's target is an ifindex no device has (bit 31: the kernel's are
positive ints) holding the flag and the map's number among the program's
maps (Program.numbered_maps), and for an inner map of a map of maps its
number in that map's pool; the sinks expand it batch by batch, with the
map's devices of that moment, as the kernel reads the map at its flush.
"""

import numpy as np

#: A broadcast target (batch.redirect): this bit, EXCLUDE_INGRESS, the number
#: of an inner map in the map's pool (1-based, 0: the map itself), the map's number.
BROADCAST = 1 << 31
EXCLUDE_INGRESS = 1 << 30
INNER_SHIFT = 12
MAP_NUMBER = (1 << INNER_SHIFT) - 1
INNER_NUMBER = (EXCLUDE_INGRESS - 1) >> INNER_SHIFT


def broadcast_target(map_number, exclude_ingress):
    """The target a broadcast over map ``map_number`` leaves in batch.redirect
    (an inner map's: with its number in the pool << INNER_SHIFT); None where
    the number does not fit."""
    if not 0 <= map_number <= MAP_NUMBER:
        return None
    return BROADCAST | (EXCLUDE_INGRESS if exclude_ingress else 0) | map_number


def redirect_groups(batch, idx, maps):
    """(ifindex, packets) for the redirected packets ``idx`` (positions in
    ``batch``, ascending): each device once, with its packets in batch order:
    those redirected to it alone and the broadcasts over a map holding it (but,
    with EXCLUDE_INGRESS, those that came in on it). A device twice in a map
    gets such packets twice (two copies, as the kernel sends); a broadcast
    over a map the program lacks goes nowhere. ``maps``: the program's maps by
    number."""
    if not idx.size:
        return
    # one stable sort: each target's packets in a run, still in batch order
    # (np.unique and a mask a target: 38 -> 18 us a batch of 1024, 3 targets)
    targets = batch.redirect[idx]
    perm = np.argsort(targets, kind="stable")
    ordered = targets[perm]
    cuts = (np.flatnonzero(ordered[1:] != ordered[:-1]) + 1).tolist()
    parts = {}
    for lo, hi in zip([0] + cuts, cuts + [idx.size]):
        t, sel = int(ordered[lo]), idx[perm[lo:hi]]
        if t < BROADCAST:
            parts.setdefault(t, []).append(sel)
            continue
        number, inner = t & MAP_NUMBER, (t >> INNER_SHIFT) & INNER_NUMBER
        m = maps[number] if number < len(maps) else None
        if m is not None and inner:
            m = m.inner_maps[inner - 1] if inner <= len(m.inner_maps) else None
        if m is None or not m.is_devmap:
            continue
        ingress = batch.ifindex[sel] if t & EXCLUDE_INGRESS else None
        for dev in m.devices():
            parts.setdefault(dev, []).append(sel if ingress is None else sel[ingress != dev])
    for dev, sels in parts.items():
        sel = np.sort(np.concatenate(sels)) if len(sels) > 1 else sels[0]
        if sel.size:
            yield dev, sel
