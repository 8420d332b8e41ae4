# dataplane: `make demo` sets everything up and replays the bundled capture;
# `make test` runs the whole suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DP := $(VENV)/bin/dataplane
BIG := pcaps/big.pcap
LB := pcaps/l4lb.pcap

.PHONY: install deps demo test bench pcaps clean

install: $(VENV)/.installed deps

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# System tools the tests use as independent oracles (tcpdump reads our pcaps).
deps:
	@command -v tcpdump >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tcpdump >/dev/null; \
	  else echo "note: tcpdump not installed; tests that use it will be skipped"; fi; }

demo: install
	$(DP) replay -r pcaps/small.pcap -p drop_udp -w out/demo

test: install
	$(PY) -m pytest -q

$(BIG):
	$(PY) pcaps/gen.py -o $(BIG) --count 1000000 --seed 7

# The load balancer's mix: 16 VIPs, 100 reals, 100,000 flows (10% new), 10% IPv6.
$(LB):
	$(PY) pcaps/gen_l4lb.py $(LB) --config pcaps/l4lb.toml

pcaps: install
	$(PY) pcaps/gen.py -o pcaps/small.pcap --count 4000 --seed 1
	$(PY) pcaps/gen.py -o $(BIG) --count 1000000 --seed 7
	$(PY) pcaps/gen_l4lb.py $(LB) --config pcaps/l4lb.toml

bench: install $(BIG) $(LB)
	$(PY) -m dataplane.cli.main bench -p drop_udp -r $(BIG)
	$(PY) benchmarks/replay_vs_tcpdump.py $(BIG)
	$(PY) benchmarks/map_lookups.py --keys 4096
	$(PY) benchmarks/map_lookups.py --keys 65536 --only hash
	$(PY) -m dataplane.cli.main bench -p flow_counter -r $(BIG)
	$(PY) -m dataplane.cli.main bench -p l4lb -r $(LB) --config pcaps/l4lb.toml

clean:
	rm -rf out $(BIG) $(LB) pcaps/l4lb.toml .pytest_cache
