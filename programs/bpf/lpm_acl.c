// SPDX-License-Identifier: GPL-2.0
/* lpm_acl: the verdict for an IPv4 source address from the longest matching
 * prefix of an LPM trie (BPF_MAP_TYPE_LPM_TRIE, BPF_F_NO_PREALLOC); no match,
 * or not IPv4: XDP_PASS. The control plane fills `acl` (prefix -> verdict).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	__type(key, struct v4_key);
	__type(value, __u32);
} acl SEC(".maps");

SEC("xdp")
int lpm_acl(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	unsigned char *p = data;
	struct v4_key key;
	__u32 *verdict;

	if (data + ETH_HLEN + 20 > data_end || bpf_ntohs(*(__be16 *)(p + 12)) != ETH_P_IP)
		return XDP_PASS;
	key.prefixlen = 32;
	__builtin_memcpy(key.addr, p + ETH_HLEN + 12, 4);
	verdict = bpf_map_lookup_elem(&acl, &key);
	if (!verdict || *verdict > XDP_TX)
		return XDP_PASS;
	return *verdict;
}

char _license[] SEC("license") = "GPL";
