// SPDX-License-Identifier: GPL-2.0
/* A map lookup's result (NULL or a value) spilled by the caller across calls to
 * subprograms with loops: the loop heads' summaries widened every spilled
 * number, the caller's NULL with them, and the non-NULL branch stored through
 * "a scalar" (refused; the kernel loads it). Reduced from a fuzzer's program. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct rec {
	__u64 v[4];
	__u32 w[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct rec);
	__uint(max_entries, 4);
} res SEC(".maps");

static __noinline __u64 loop_sum(__u8 *q, void *end, __u32 n)
{
	__u64 acc = 17028;

	for (__u32 i = 0; i < 64 && i < n; i++) {
		if ((void *)(q + i + 1) > end)
			break;
		acc ^= (__u64)q[i] << (i & 7);
	}
	return acc;
}

static __noinline int stk(__u64 *buf, __u32 n, __u8 *p)
{
	__u64 x = buf[0], y = buf[1];

	buf[2] = ((__s32)(*(__s32 *)(p + 36)) << (x & 31)) &
		 ((__s64)(*(__s32 *)(p + 30)) << ((__s32)y & 63));
	buf[3] = x ^ (y << (n & 31));
	return (int)(buf[2] & 0xff) - 128;
}

static __noinline __s64 clamp(__s64 v, __s32 lo, __s32 hi)
{
	if (v < lo)
		return lo;
	if ((__s32)v > hi)
		return hi;
	return v;
}

static __noinline __u64 nest(__u8 *p, void *end, __s64 v)
{
	__u64 t = loop_sum(p, end, p[1] & 63);

	return t + clamp(v, -360, 930);
}

SEC("xdp")
int widen_spill(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *p = data;
	__u64 acc = 0, t = 0, buf[4] = {};
	__s32 s = 0;
	__u32 key = 0;
	struct rec *r;

	if ((void *)(p + 64) > end) {
		__u64 x = loop_sum(p, end, end - data);

		key = 3;
		r = bpf_map_lookup_elem(&res, &key);
		if (r)
			r->v[0] += x;
		return x & 1 ? XDP_DROP : XDP_PASS;
	}
	key = p[0] & 3;
	r = bpf_map_lookup_elem(&res, &key);
	if (r)
		acc += __sync_fetch_and_add(&r->v[1], -1);
	buf[0] = ((__u64)acc << 63) + __builtin_bswap64(t);
	buf[1] = acc;
	s += stk(buf, *(__u16 *)(p + 53) < (__s64)*(__u32 *)p ? *(__u16 *)(p + 53) : *(__u32 *)p, p);
	acc ^= buf[2] + buf[3];
	t = nest(p, end, -*(__u8 *)(p + 22) ^ s);
	buf[0] = acc;
	buf[1] = acc;
	s += stk(buf, (__s32)acc << (acc & 31), p);
	acc ^= buf[2] + buf[3];
	if (r) {
		r->v[3] = acc + t;
		r->w[3] = s;
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
