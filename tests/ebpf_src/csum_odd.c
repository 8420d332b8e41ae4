// SPDX-License-Identifier: GPL-2.0
/* bpf_csum_diff with sizes that are not multiples of 4 (Linux >= 6.13 sums
 * them; older kernels said -EINVAL). Each result is written as 4 bytes at
 * 16 + 4 * i, so that output bytes compare with the kernel's. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define OUT(i, x) do { __s64 v = (x); p[16 + 4 * i] = v; p[17 + 4 * i] = v >> 8; \
	p[18 + 4 * i] = v >> 16; p[19 + 4 * i] = v >> 24; } while (0)

SEC("xdp")
int csum_odd(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *p = data;
	__u32 buf[4] = { 1, 2, 3, 4 };

	if (data + 64 > data_end)
		return XDP_PASS;
	OUT(0, bpf_csum_diff((void *)(p + 8), 5, buf, 4, 0xffffffff));
	OUT(1, bpf_csum_diff((void *)(p + 8), 4, buf, 5, 0));
	OUT(2, bpf_csum_diff((void *)(p + 8), 2, buf, 0, 0));
	OUT(3, bpf_csum_diff(0, 0, buf, 3, 7));
	OUT(4, bpf_csum_diff((void *)(p + 8), 8, buf, 16, 7));
	OUT(5, bpf_csum_diff((void *)(p + 8), 1, 0, 0, 7));
	return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
