// SPDX-License-Identifier: GPL-2.0
/* tail_call: dispatch by IP protocol through a PROG_ARRAY (bpf_tail_call).
 *
 * The entry program reads the IPv4 protocol of an untagged frame and tail-calls
 * slot <protocol> of jmp_table: slot 17 (UDP) holds handle_udp, which drops;
 * slot 6 (TCP) holds handle_tcp, which sends the frame back (XDP_TX). An empty
 * slot makes bpf_tail_call return, and the entry program passes the frame.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int handle_udp(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("xdp")
int handle_tcp(struct xdp_md *ctx)
{
	return XDP_TX;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 32);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} jmp_table SEC(".maps") = {
	.values = {
		[6] = (void *)&handle_tcp,
		[17] = (void *)&handle_udp,
	},
};

SEC("xdp")
int tail_call(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	unsigned char *p = data;

	if (data + ETH_HLEN + 20 > data_end)
		return XDP_PASS;
	if (bpf_ntohs(*(__be16 *)(p + 12)) != ETH_P_IP)
		return XDP_PASS;
	bpf_tail_call(ctx, &jmp_table, p[ETH_HLEN + 9]);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
