// SPDX-License-Identifier: GPL-2.0
/* port_pool: source ports handed out from a queue, as a SNAT's pool.
 * An IPv4 TCP SYN (no ACK) takes the next free port from free_ports
 * (BPF_MAP_TYPE_QUEUE, bpf_map_pop_elem): its source port becomes that port,
 * the TCP checksum fixed, and the frame goes back out (XDP_TX); an empty pool
 * drops it (counted in stats[0]). A FIN or RST gives its source port back
 * (bpf_map_push_elem; a full pool counts it in stats[1]). The last 16
 * allocations are kept on a stack (BPF_MAP_TYPE_STACK, pushed with BPF_EXIST:
 * the oldest goes). Everything else passes. The control plane fills the pool:
 * dataplane map push free_ports 40000 --pin DIR.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct allocation {
	__be32 saddr;
	__be16 old_port;
	__be16 new_port;
};

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 1024);
	__type(value, __be16);
} free_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 16);
	__type(value, struct allocation);
} recent SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &what);

	if (n)
		*n += 1;
}

/* RFC 1624: the checksum after one 16-bit word went from old to new. */
static __always_inline __u16 csum_replace2(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

SEC("xdp")
int port_pool(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct allocation a;
	struct tcphdr *tcp;
	__be16 port;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if (ip->protocol != IPPROTO_TCP || ip->ihl != 5)
		return XDP_PASS;
	tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > data_end)
		return XDP_PASS;
	if (tcp->fin || tcp->rst) {
		port = tcp->source;
		if (bpf_map_push_elem(&free_ports, &port, 0))
			count(1);
		return XDP_PASS;
	}
	if (!tcp->syn || tcp->ack)
		return XDP_PASS;
	if (bpf_map_pop_elem(&free_ports, &port)) {
		count(0);
		return XDP_DROP;
	}
	a.saddr = ip->saddr;
	a.old_port = tcp->source;
	a.new_port = port;
	tcp->check = csum_replace2(tcp->check, tcp->source, port);
	tcp->source = port;
	bpf_map_push_elem(&recent, &a, BPF_EXIST);
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
