"""ARRAY_OF_MAPS and HASH_OF_MAPS: inner maps chosen by the control plane, looked
up and used by programs."""

import textwrap

import numpy as np
import pytest

from dataplane import XdpAction, load_program
from dataplane.maps import (BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_HASH, InnerMap, Map,
                            MapError)

PROGRAM = """
import numpy as np
from dataplane import *
from dataplane.maps import *

by_port = Map("by_port", BPF_MAP_TYPE_ARRAY_OF_MAPS, key=np.uint32, max_entries=4,
              inner=InnerMap(BPF_MAP_TYPE_LRU_HASH, np.uint32, np.uint64, 8), pool=3)
by_name = Map("by_name", BPF_MAP_TYPE_HASH_OF_MAPS, key=np.uint64, max_entries=4,
              inner=InnerMap(BPF_MAP_TYPE_ARRAY, np.uint32, np.uint64, 4), pool=2)

@xdp
def prog(ctx):
    pkt = ctx.pkt
    if pkt[0] == 0:
        inner = bpf_map_lookup_elem(by_port, pkt[1])
        if inner is None:
            return XDP_PASS
        v = bpf_map_lookup_elem(inner, pkt[2])
        if v is None:
            bpf_map_update_elem(inner, pkt[2], 1, BPF_ANY)
            return XDP_DROP
        v[0] += 1
        return XDP_TX
    if pkt[0] == 1:
        inner = bpf_map_lookup_elem(by_name, 0x6E616D65)
        if inner is None:
            return XDP_PASS
        v = bpf_map_lookup_elem(inner, pkt[2])
        if v is not None:
            v[0] += 100
        return XDP_TX
    if bpf_map_update_elem(by_port, 0, 0, BPF_ANY) == -95:  # -EOPNOTSUPP
        return XDP_ABORTED
    return XDP_PASS
"""


@pytest.fixture()
def prog(tmp_path):
    path = tmp_path / "mim.py"
    path.write_text(textwrap.dedent(PROGRAM))
    return load_program(str(path))


def test_array_of_maps(prog):
    outer = prog.maps["by_port"]
    assert prog.test_run(bytes([0, 1, 7]) + bytes(60))[0] == XdpAction.XDP_PASS  # no inner
    outer.update(1, 2)  # slot 1 -> inner map 2
    assert prog.test_run(bytes([0, 1, 7]) + bytes(60))[0] == XdpAction.XDP_DROP  # inserted
    assert prog.test_run(bytes([0, 1, 7]) + bytes(60))[0] == XdpAction.XDP_TX    # found
    assert outer.inner_map(1).items() == [(7, 2)]
    assert outer.inner_maps[0].items() == [] and outer.inner_maps[1].items() == []
    outer.update(1, 0)  # swap in another inner map: the program follows at once
    assert prog.test_run(bytes([0, 1, 7]) + bytes(60))[0] == XdpAction.XDP_DROP
    assert outer.items()[0][1]["inner"] == 0


def test_hash_of_maps_and_no_updates_from_programs(prog):
    outer = prog.maps["by_name"]
    outer.update(0x6E616D65, 1)
    outer.inner_map(0x6E616D65).update(3, 5)
    assert prog.test_run(bytes([1, 0, 3]) + bytes(60))[0] == XdpAction.XDP_TX
    assert outer.inner_maps[1].lookup(3) == 105
    assert prog.test_run(bytes([2]) + bytes(60))[0] == XdpAction.XDP_ABORTED


def test_map_of_maps_declaration_errors():
    with pytest.raises(MapError, match="needs inner=InnerMap"):
        Map("o", BPF_MAP_TYPE_ARRAY_OF_MAPS, key=np.uint32, max_entries=2)
    o = Map("o", BPF_MAP_TYPE_ARRAY_OF_MAPS, key=np.uint32, max_entries=2,
            inner=InnerMap(BPF_MAP_TYPE_HASH, np.uint32, np.uint32, 4), pool=1)
    with pytest.raises(MapError, match=r"bad inner map 5 \(0..0\)"):
        o.update(0, 5)
    with pytest.raises(MapError, match="max_entries is required"):
        Map("m", BPF_MAP_TYPE_HASH, key=np.uint32, value=np.uint32)
