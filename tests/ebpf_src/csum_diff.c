// SPDX-License-Identifier: GPL-2.0
/* bpf_csum_diff in its three forms (both buffers, `to` only, `from` only), each
 * result written into the packet so that output bytes compare with the kernel's. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int csum_diff(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 from[2], to[2];
	__u32 *out = data + 34;

	if (data + 46 > data_end)
		return XDP_PASS;
	__builtin_memcpy(from, data + 26, 8);
	to[0] = from[1];
	to[1] = from[0] ^ 0x01020304;
	out[0] = bpf_csum_diff(from, 8, to, 8, *(__u16 *)(data + 24));
	out[1] = bpf_csum_diff(0, 0, to, 8, 0x1234);
	out[2] = bpf_csum_diff(from, 8, 0, 0, 0xffff);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
