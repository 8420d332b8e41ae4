/* A legacy "maps" section: struct bpf_map_def (defined here, libbpf 1.x
 * dropped it) with two extra trailing fields, as iproute2-era objects had. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct bpf_map_def_ext {
    unsigned int type, key_size, value_size, max_entries, map_flags;
    unsigned int id, pinning;
};

struct bpf_map_def_ext SEC("maps") legacy_hash = {
    .type = BPF_MAP_TYPE_HASH, .key_size = 4, .value_size = 8,
    .max_entries = 100, .map_flags = BPF_F_NO_PREALLOC,
};

struct bpf_map_def_ext SEC("maps") legacy_array = {
    .type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 16,
    .max_entries = 7, .id = 3, .pinning = 2,
};

SEC("xdp/legacy")
int legacy_prog(struct xdp_md *ctx)
{
    __u32 k = 0;
    if (bpf_map_lookup_elem(&legacy_array, &k))
        return XDP_DROP;
    return bpf_map_lookup_elem(&legacy_hash, &k) ? XDP_TX : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
