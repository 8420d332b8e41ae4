/* Programs in "xdp", "xdp/second" and "xdp.frags"; a global .text function
 * called from prog_a, static .text functions called from both programs
 * (nested: global_helper -> middle -> leaf), a bpf_loop callback, and
 * globals in .data, .rodata and .bss (global and static). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

int seen_data = 7;
long more_data = 0x1122334455667788;
static volatile int static_data = 0x5a5a;
const volatile int limit = 42;
const volatile char tag[8] = "abcdefg";
int zeroed;
long zeroed2[4];

static __attribute__((noinline)) int leaf(int x)
{
    return x * 3 + limit;
}

static __attribute__((noinline)) int middle(int x)
{
    zeroed2[2] += 1;
    return leaf(x) + leaf(x + 1);
}

__attribute__((noinline)) int global_helper(int x)
{
    return middle(x) ^ seen_data;
}

static int loop_cb(__u32 i, void *data)
{
    static_data += i;
    return 0;
}

SEC("xdp")
int prog_a(struct xdp_md *ctx)
{
    __u32 k = 1;
    __u64 *v = bpf_map_lookup_elem(&counters, &k);
    if (v)
        __sync_fetch_and_add(v, 1);
    zeroed++;
    return global_helper(ctx->ingress_ifindex) & 3;
}

SEC("xdp/second")
int prog_b(struct xdp_md *ctx)
{
    more_data++;
    static_data++;
    return middle(ctx->rx_queue_index) + tag[3];
}

SEC("xdp.frags")
int prog_c(struct xdp_md *ctx)
{
    bpf_loop(4, loop_cb, 0, 0);
    bpf_printk("queue %d", ctx->rx_queue_index);
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
