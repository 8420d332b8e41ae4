// SPDX-License-Identifier: GPL-2.0
/* printk: trace each IPv4 frame's length and protocol with bpf_printk, pass all.
 *
 * bpf_printk keeps its format in .rodata (a static const string), so the same
 * line appears in the kernel's trace_pipe and in dataplane's trace output.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int printk(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	unsigned char *p = data;

	if (data + ETH_HLEN + 20 > data_end)
		return XDP_PASS;
	if (bpf_ntohs(*(__be16 *)(p + 12)) != ETH_P_IP)
		return XDP_PASS;
	bpf_printk("len=%d proto=%d ttl=%x", (int)(data_end - data), p[ETH_HLEN + 9],
		   p[ETH_HLEN + 8]);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
