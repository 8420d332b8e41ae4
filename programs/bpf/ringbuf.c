// SPDX-License-Identifier: GPL-2.0
/* ringbuf: one event per IPv4 TCP SYN to a ring buffer (bpf_ringbuf_output),
 * with its addresses and ports in network order; every frame passes.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct syn_event {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u32 len;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} events SEC(".maps");

SEC("xdp")
int ringbuf(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct tcphdr *tcp;
	struct syn_event ev;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if (ip->protocol != IPPROTO_TCP || ip->ihl != 5)
		return XDP_PASS;
	tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > data_end || !tcp->syn || tcp->ack)
		return XDP_PASS;
	ev.saddr = ip->saddr;
	ev.daddr = ip->daddr;
	ev.sport = tcp->source;
	ev.dport = tcp->dest;
	ev.len = data_end - data;
	bpf_ringbuf_output(&events, &ev, sizeof(ev), 0);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
