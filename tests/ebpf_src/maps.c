/* BTF-defined maps of many types; one program uses every map. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct flow_key { __u32 src, dst; __u16 sport, dport; __u8 proto; };
struct flow_val { __u64 packets, bytes; };
struct lpm_v4_key { __u32 prefixlen; __u8 addr[4]; };

struct inner {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 16);
    __type(key, __u32);
    __type(value, __u64);
} inner_a SEC(".maps"), inner_b SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, struct flow_key);
    __type(value, struct flow_val);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, __u64);
    __type(value, __u32);
} lru SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);
    __type(value, struct flow_val);
} stats SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 255);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct lpm_v4_key);
    __type(value, __u32);
} lpm SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4096);
} events SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP);
    __uint(max_entries, 8);
    __uint(key_size, sizeof(__u32));
    __uint(value_size, sizeof(__u32));
} tx_ports SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, 4);
    __type(key, __u32);
    __array(values, struct inner);
} outer SEC(".maps") = { .values = { [1] = &inner_b, [3] = &inner_a } };

struct {
    __uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
    __uint(max_entries, 2);
    __type(key, __u32);
    __array(values, struct {
        __uint(type, BPF_MAP_TYPE_HASH);
        __uint(max_entries, 10);
        __type(key, __u32);
        __type(value, __u16);
    });
} outer_hash SEC(".maps");

SEC("xdp")
int use_maps(struct xdp_md *ctx)
{
    __u32 k = 0;
    __u64 k64 = 0;
    bpf_map_lookup_elem(&flows, &k);
    bpf_map_lookup_elem(&lru, &k64);
    bpf_map_lookup_elem(&stats, &k);
    bpf_map_lookup_elem(&lpm, &k);
    bpf_map_lookup_elem(&outer, &k);
    bpf_map_lookup_elem(&outer_hash, &k);
    bpf_map_lookup_elem(&inner_a, &k);
    bpf_ringbuf_output(&events, &k, 4, 0);
    return bpf_redirect_map(&tx_ports, 0, 0);
}

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __array(values, int (void *));
} jumps SEC(".maps") = { .values = { [0] = (void *)&use_maps } };

char LICENSE[] SEC("license") = "GPL";
