/* Two programs in one section, sharing a static subprogram of that same
 * section (calls resolved by clang, no relocation), a program in "tc", and a
 * static string in .rodata referenced through the section symbol. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static volatile int s_bss;
static volatile const int s_ro = 9;

static __attribute__((noinline, section("xdp"))) int same_sec(int x)
{
    return x + s_ro;
}

SEC("xdp")
int first(struct xdp_md *ctx)
{
    s_bss++;
    return same_sec(ctx->ingress_ifindex) & 3;
}

SEC("xdp")
int second(struct xdp_md *ctx)
{
    bpf_printk("second %d", 1);
    return same_sec(2) & 3;
}

SEC("tc")
int classifier(struct __sk_buff *skb)
{
    return s_bss;
}

char LICENSE[] SEC("license") = "GPL";
