// SPDX-License-Identifier: GPL-2.0
/* xdp_drop: drop every frame. The kernel's own XDP on a veth, as the ceiling of
 * benchmarks/live_rx.py's receive-and-drop (drop_all is its dataplane twin). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
