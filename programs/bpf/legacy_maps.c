// SPDX-License-Identifier: GPL-2.0
/* legacy_maps: maps defined the pre-BTF way, struct bpf_map_def in SEC("maps").
 *
 * libbpf >= 1.0 no longer ships struct bpf_map_def (nor loads a "maps"
 * section: bpftool built on it refuses this object), so the struct is
 * defined here with its historic layout (five u32). The kernel itself does
 * not care how maps were described: dataplane.ebpf.kernel creates these
 * maps itself for such objects.
 *
 *   ethertype_count  HASH, key u16 (EtherType as on the wire), value u64,
 *                    64 entries: packets per outer EtherType
 *   config           ARRAY, 1 x u32: an EtherType to drop, in host order
 *                    (0: drop nothing)
 *
 * Verdict: XDP_DROP when the outer EtherType is config[0], else XDP_PASS;
 * frames shorter than an Ethernet header pass uncounted.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

struct bpf_map_def SEC("maps") ethertype_count = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u16),
	.value_size = sizeof(__u64),
	.max_entries = 64,
};

struct bpf_map_def SEC("maps") config = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 1,
};

SEC("xdp")
int legacy_maps(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u64 one = 1, *count;
	__u32 zero = 0, *drop;
	__u16 key;

	if (data + sizeof(*eth) > data_end)
		return XDP_PASS;
	key = eth->h_proto;
	count = bpf_map_lookup_elem(&ethertype_count, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&ethertype_count, &key, &one, BPF_NOEXIST);
	drop = bpf_map_lookup_elem(&config, &zero);
	if (drop && *drop != 0 && *drop == bpf_ntohs(key))
		return XDP_DROP;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
