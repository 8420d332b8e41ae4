// SPDX-License-Identifier: GPL-2.0
/* flood: every frame out of every device in `ports` but the one it came in on
 * (bpf_redirect_map with BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS, the key
 * ignored): a hub, or a bridge's flood of broadcast and unknown unicast.
 * Frames shorter than an Ethernet header are dropped.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} ports SEC(".maps");

SEC("xdp")
int flood(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (data + ETH_HLEN > data_end)
		return XDP_DROP;
	return bpf_redirect_map(&ports, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS);
}

char _license[] SEC("license") = "GPL";
