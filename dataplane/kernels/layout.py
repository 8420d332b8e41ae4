"""Row numbers of PacketBatch.meta: every per-packet column in one int64 array.

One 2-D array instead of ten columns keeps a compiled call's argument count
(and so its ~100 ns-per-argument dispatch cost) small.
"""

DATA = 0          # offset of the first byte of packet data in buf (xdp_md->data)
DATA_END = 1      # offset one past the last byte (xdp_md->data_end)
FRAME_START = 2   # start of the packet's slot (data_hard_start): the headroom's limit
FRAME_END = 3     # end of the slot: the tailroom's limit
TS_NS = 4         # capture timestamp, ns since the epoch
SNAP_CUT = 5      # orig_len - caplen: bytes on the wire the capture did not keep
IFINDEX = 6       # ingress ifindex (xdp_md->ingress_ifindex)
RX_QUEUE = 7      # receive queue (xdp_md->rx_queue_index)
ACTION = 8        # the program's verdict (XDP_*)
REDIRECT = 9      # redirect target ifindex when ACTION is XDP_REDIRECT
DATA_META = 10    # start of the metadata before data (xdp_md->data_meta; == DATA: none)
ROWS = 11

# Slots of the runner's int64 scratch array (see kernels/runner.py).
SCRATCH_FAULTS = 0        # out-of-bounds accesses
SCRATCH_FIRST_FAULT = 1   # first faulting index, or -1
SCRATCH_INVALID = 2       # invalid verdicts (unknown action, XDP_REDIRECT without target)
SCRATCH_FIRST_INVALID = 3  # first invalid index, or -1
SCRATCH_FAULT = 4         # the current packet's fault flag (the view's pointer)
SCRATCH_SEED = 5          # non-zero: reseed bpf_get_prandom_u32 before the batch
SCRATCH_KTIME = 6         # non-zero: bpf_ktime_get_ns() gives each packet's capture time
SCRATCH_WORKER = 7        # the worker running the loop (bpf_get_smp_processor_id)
# The prefetch hook's memo (kernels/runner.py HOOK_SOURCE): a ring of MEMO_SLOTS
# slots, one per packet from the hook's run on it (2 * HOOK_AHEAD packets
# ahead) to the program's; a slot is [count, (bucket address, first row's
# address, row bytes) x MEMO_ENTRIES, hint]: the hash-map buckets
# bpf_map_prefetch fetched for the packet (then the address of the next link,
# in a row: see runner.memo_fetch_rows), and at MEMO_HINT the hash of the key
# it fetched in an LRU hash map, with that map's keys address (the program's
# lookup starts there: lru_htab.lru_find_hinted).
SCRATCH_MEMO = 8
MEMO_SLOTS = 32
MEMO_ENTRIES = 5
MEMO_WORDS = 3
MEMO_HINT = 1 + MEMO_WORDS * MEMO_ENTRIES
MEMO_SLOT_WORDS = MEMO_HINT + 2
SCRATCH_SIZE = SCRATCH_MEMO + MEMO_SLOTS * MEMO_SLOT_WORDS
