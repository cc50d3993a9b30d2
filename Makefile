# autonet: `make demo` and `make test` install what is missing, then run. Both need root.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := iproute2 nftables libnftables1 iperf3 iputils-ping python3-venv python3-pip conntrack procps \
  curl ethtool tcpdump util-linux openvswitch-switch containernetworking-plugins etcd-server graphviz \
  chromium chromium-driver podman runc busybox-static
STAMP := $(VENV)/.installed

.PHONY: all deps venv image test test-repeat unit e2e lint demo proto clean

all: test

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing </dev/null; \
	fi

# Debian's own python3 (not a per-user build): instance processes run as `nobody`
# and must be able to execute the agent's interpreter.
$(STAMP): pyproject.toml requirements.lock plugins/l2ovs/pyproject.toml | deps
	test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]' -e plugins/l2ovs
	touch $(STAMP)

venv: $(STAMP)

proto: venv
	$(PY) -m grpc_tools.protoc -Isrc --python_out=src --grpc_python_out=src --pyi_out=src src/autonet/agent/rpc/agent.proto
	$(PY) -m grpc_tools.protoc -Iplugins/l2ovs/src --python_out=plugins/l2ovs/src --grpc_python_out=plugins/l2ovs/src \
	  --pyi_out=plugins/l2ovs/src plugins/l2ovs/src/autonet_l2ovs/l2.proto
	$(PY) -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src src/autonet/store/etcdrpc/kv.proto \
	  src/autonet/store/etcdrpc/auth.proto src/autonet/store/etcdrpc/rpc.proto

lint: venv
	$(VENV)/bin/ruff check src tests plugins
	$(VENV)/bin/ruff format --check src tests plugins
	$(VENV)/bin/mypy src plugins/l2ovs/src
	$(VENV)/bin/lint-imports

# The container image the tests and the demo run (no registry here: built from local files).
image: deps
	images/build-busybox.sh

test: venv image
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# `make test-repeat N=3`: the whole suite N times in a row, each from a fresh clone of
# HEAD (its own venv, as CI does), to catch flaky tests and missing install steps.
# The clone's directory must be world-readable: instances run as unprivileged users and
# execute the clone's interpreter and sources.
N ?= 3
test-repeat:
	@failed=0; for i in $$(seq 1 $(N)); do \
	  dir=$$(mktemp -d /tmp/autonet-repeat.XXXXXX) && chmod 755 "$$dir"; \
	  git clone -q . "$$dir/autonet" && cp -r ../shared "$$dir/" 2>/dev/null; \
	  echo "run $$i/$(N) in $$dir/autonet"; \
	  if (cd "$$dir/autonet" && make test </dev/null >"$$dir/test.log" 2>&1); then result=passed; \
	  else result=FAILED; failed=$$((failed + 1)); fi; \
	  echo "run $$i: $$result: $$(grep -E '[0-9]+ (passed|failed)' "$$dir/test.log" | tail -1) (log: $$dir/test.log)"; \
	done; echo "$(N) runs, $$failed failed"; test $$failed -eq 0

unit: venv
	$(VENV)/bin/pytest -q -m "not lab" $(PYTEST_ARGS)

e2e: venv image
	$(VENV)/bin/pytest -q -m lab $(PYTEST_ARGS)

demo: venv image
	$(VENV)/bin/autonet demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
