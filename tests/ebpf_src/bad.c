/* Objects the loader must refuse; one variant per -D flag. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifdef EXTERN_CALL
extern int missing_fn(int x);
SEC("xdp") int calls_extern(struct xdp_md *ctx) { return missing_fn(1); }
#endif

#ifdef BAD_MAP_MEMBER
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 4);
    __uint(bogus, 1);
    __type(key, __u32);
    __type(value, __u32);
} bad_map SEC(".maps");
SEC("xdp") int uses_bad(struct xdp_md *ctx) { __u32 k = 0; return bpf_map_lookup_elem(&bad_map, &k) ? 1 : 2; }
#endif

#ifdef BAD_LEGACY
struct small_def { unsigned int type, key_size, value_size, max_entries, map_flags; };
struct big_def { unsigned int type, key_size, value_size, max_entries, map_flags, a, b; };
struct small_def SEC("maps") m1 = { BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0 };
struct big_def SEC("maps") m2 = { BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0, 0, 0 };
SEC("xdp") int uses_legacy(struct xdp_md *ctx) { __u32 k = 0; return bpf_map_lookup_elem(&m2, &k) ? 1 : 2; }
#endif

#ifdef NO_PROGRAM
__attribute__((noinline)) int only_text(int x) { return x + 1; }
#endif

char LICENSE[] SEC("license") = "GPL";
