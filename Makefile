# dataplane: `make demo` sets everything up and replays the bundled capture;
# `make test` runs the whole suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DP := $(VENV)/bin/dataplane
BIG := pcaps/big.pcap
LB := pcaps/l4lb.pcap

.PHONY: install deps demo test bench bench-deps pcaps clean bpf bpf-toolchain

install: $(VENV)/.installed deps

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# apt-get install $(1) as root where apt-get is, else run $(2) (say what is missing).
apt_install = if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
	  else $(2); fi

# System tools the tests use as independent oracles: tcpdump reads our pcaps;
# clang builds test objects; bpftool loads objects into the kernel
# (BPF_PROG_TEST_RUN, the eBPF engine's reference).
DEB_TOOLS := tcpdump:tcpdump clang:clang llvm-objdump:llvm bpftool:bpftool
deps:
	@missing=""; for t in $(DEB_TOOLS); do \
	  command -v $${t%%:*} >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin" command -v $${t%%:*} >/dev/null 2>&1 \
	    || missing="$$missing $${t##*:}"; done; \
	[ -f /usr/include/bpf/bpf_helpers.h ] || missing="$$missing libbpf-dev"; \
	if [ -n "$$missing" ]; then \
	  $(call apt_install,$$missing,echo "note: not installed:$$missing; tests that use them will be skipped"); fi
	@# the kernel oracle pins what bpftool loads in the bpf filesystem, which
	@# systemd mounts on most hosts but a bare container or VM may lack
	@grep -qs '^[^ ]* /sys/fs/bpf bpf ' /proc/mounts || { [ "$$(id -u)" = 0 ] \
	  && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; } \
	  || echo "note: no bpf filesystem at /sys/fs/bpf; tests against the kernel will be skipped"

# The C XDP programs in programs/bpf/ (each X.c -> X.o beside it; the objects are
# committed, so running them needs no clang). Installs clang and libbpf-dev via
# apt-get when they are missing and we are root.
CLANG ?= clang
BPF_CFLAGS := -O2 -g -target bpf -I/usr/include/$(shell uname -m)-linux-gnu
BPF_SRCS := $(wildcard programs/bpf/*.c)
BPF_OBJS := $(BPF_SRCS:.c=.o)

bpf: $(BPF_OBJS)

programs/bpf/%.o: programs/bpf/%.c programs/bpf/parse_eth.h | bpf-toolchain
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

bpf-toolchain:
	@{ command -v $(CLANG) >/dev/null 2>&1 && [ -f /usr/include/bpf/bpf_helpers.h ]; } || { \
	  $(call apt_install,clang libbpf-dev,echo "error: clang and libbpf-dev are needed to build programs/bpf (apt-get install clang libbpf-dev)"; exit 1); }

# valgrind counts instructions per packet (benchmarks/icount.py) in make bench.
bench-deps:
	@command -v valgrind >/dev/null 2>&1 || { \
	  $(call apt_install,valgrind,echo "note: valgrind not installed; benchmarks/icount.py will say skipped"); }

demo: install
	$(DP) replay -r pcaps/small.pcap -p drop_udp -w out/demo

# The suite on every core, 8 at most (pytest-xdist; tests name their namespaces,
# pins and files by process): 8m56s on one core of this 2-core VM, 4m58s on two.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 8 ] && n=8; echo $$n)

test: install
	$(PY) -m pytest -q -n $(TEST_JOBS)

$(BIG):
	$(PY) pcaps/gen.py -o $(BIG) --count 1000000 --seed 7

# The load balancer's mix: 16 VIPs, 100 reals, 100,000 flows (10% new), 10% IPv6.
$(LB):
	$(PY) pcaps/gen_l4lb.py $(LB) --config pcaps/l4lb.toml

pcaps: install
	$(PY) pcaps/gen.py -o pcaps/small.pcap --count 4000 --seed 1
	$(PY) pcaps/gen.py -o $(BIG) --count 1000000 --seed 7
	$(PY) pcaps/gen_l4lb.py $(LB) --config pcaps/l4lb.toml

bench: install bench-deps $(BIG) $(LB)
	$(PY) -m dataplane.cli.main bench -p drop_udp -r $(BIG)
	$(PY) benchmarks/replay_vs_tcpdump.py $(BIG)
	$(PY) benchmarks/map_lookups.py --keys 4096
	$(PY) benchmarks/map_lookups.py --keys 65536 --only hash
	$(PY) -m dataplane.cli.main bench -p flow_counter -r $(BIG)
	$(PY) -m dataplane.cli.main bench -p l4lb -r $(LB) --config pcaps/l4lb.toml
	# the same mix's first 100,000 packets: 38 MB of capture, not 380 (cache-resident)
	$(PY) -m dataplane.cli.main bench -p l4lb -r $(LB) --config pcaps/l4lb.toml -c 100000
	$(PY) benchmarks/icount.py drop_udp flow_counter -r $(BIG)
	$(PY) benchmarks/icount.py l4lb -r $(LB) --config pcaps/l4lb.toml
	$(PY) benchmarks/ebpf_vs_kernel.py
	$(PY) benchmarks/cold_compile.py --runs 5
	$(PY) benchmarks/workers_scaling.py $(BIG) --workers 2
	$(PY) -m dataplane.cli.main bench -p l4lb -r $(LB) --config pcaps/l4lb.toml --workers 2
	$(PY) benchmarks/live_rx.py --seconds 3 --runs 3
	$(PY) benchmarks/live_rx.py --forward --seconds 3 --runs 3

clean:
	rm -rf out $(BIG) $(LB) pcaps/l4lb.toml .pytest_cache
