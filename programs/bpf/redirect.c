// SPDX-License-Identifier: GPL-2.0
/* redirect: UDP to the port table's device for (destination port % 4)
 * (bpf_redirect_map on a DEVMAP; an empty slot passes), TCP to the ifindex in
 * the one-entry `tcp_ifindex` array (bpf_redirect; 0: pass), the rest passes.
 * Untagged IPv4 with a 20-byte header only.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tcp_ifindex SEC(".maps");

SEC("xdp")
int redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	unsigned char *p = data;
	__u32 zero = 0, *ifindex;

	if (data + ETH_HLEN + 24 > data_end || bpf_ntohs(*(__be16 *)(p + 12)) != ETH_P_IP
	    || p[ETH_HLEN] != 0x45)
		return XDP_PASS;
	if (p[ETH_HLEN + 9] == 17)
		return bpf_redirect_map(&ports, bpf_ntohs(*(__be16 *)(p + ETH_HLEN + 22)) & 3,
					XDP_PASS);
	if (p[ETH_HLEN + 9] == 6) {
		ifindex = bpf_map_lookup_elem(&tcp_ifindex, &zero);
		if (ifindex && *ifindex)
			return bpf_redirect(*ifindex, 0);
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
