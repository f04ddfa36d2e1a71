# kmesh: `make run` brings up a demo lab, `make test` runs the whole suite.
# Both install what is missing first (system packages via apt when root).

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.kmesh-installed
APT_PKGS := iproute2 iptables nftables conntrack etcd-server etcd-client dnsutils dnsperf dnsmasq-base qemu-system-x86 busybox-static \
            containernetworking-plugins iperf3 haproxy nginx-light wrk procps iputils-ping util-linux curl ipset ipvsadm \
            vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-utils \
            debootstrap ebtables genisoimage e2fsprogs openssh-client tcpdump
PYTEST_ARGS ?=

.PHONY: run test deps system-deps python-deps down clean bench vagrant-box vagrant-wheels test-vm

run: deps
	$(BIN)/kmesh up --nodes 3 --demo

down:
	$(BIN)/kmesh down

# Four runs: the tests without a netns lab or VM (most of the suite) on two workers (pytest-xdist); the netns
# labs two at a time, each test file on one worker (its lab is shared by the file's tests); then, one at a
# time, the labs that measure time (link delays and rates, a partition's timing), and the VMs. PYTEST_MARK
# narrows them all (PYTEST_MARK="not vm" leaves the VMs out); a run it leaves empty is not an error (pytest's 5).
UNIT_MARK := not netns and not vm
LAB_MARK := netns and not vm
SERIAL_LABS := tests/packet/test_link_lab.py tests/packet/test_delayer.py tests/packet/test_shaping.py \
               tests/packet/test_partition_lab.py
PYTEST_MARK ?=
AND_MARK = $(if $(PYTEST_MARK), and ($(PYTEST_MARK)))
test: deps
	$(BIN)/python -m pytest -n 2 -m "$(UNIT_MARK)$(AND_MARK)" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "($(LAB_MARK))$(AND_MARK)" $(addprefix --ignore=,$(SERIAL_LABS)) \
	    $(PYTEST_ARGS) || [ $$? = 5 ]
	$(BIN)/python -m pytest -m "($(LAB_MARK))$(AND_MARK)" $(SERIAL_LABS) $(PYTEST_ARGS) || [ $$? = 5 ]
	$(BIN)/python -m pytest -m "vm$(AND_MARK)" $(PYTEST_ARGS) || [ $$? = 5 ]

bench: deps
	$(BIN)/python benchmarks/api.py

# The Vagrant lab (docs/vagrant.md). The box for the libvirt provider, built once per content under
# ~/.cache/kmesh/vagrant and added as kmesh/debian12 (root: debootstrap).
vagrant-box: deps
	vagrant/box/make.sh

# kmesh's wheel and its dependencies' into vagrant/.wheelhouse (`vagrant up` does it too)
vagrant-wheels: python-deps
	vagrant/scripts/host-wheels.sh

# only the tests that boot VMs (make test runs them too; PYTEST_MARK="not vm" leaves them out)
test-vm: deps
	$(BIN)/python -m pytest -m vm tests/vm $(PYTEST_ARGS)

deps: system-deps python-deps

# Installs only the packages that are missing; needs root (skipped otherwise).
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	  command -v $(PYTHON) >/dev/null && $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3 python3-venv python3-pip"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    policy=""; \
	    if [ ! -e /usr/sbin/policy-rc.d ]; then \
	      policy=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' > $$policy; chmod 755 $$policy; \
	    fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; rc=$$?; \
	    [ -z "$$policy" ] || rm -f $$policy; \
	    [ $$rc = 0 ] || exit $$rc; \
	  fi; \
	  if ! command -v kubectl >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl 2>/dev/null || \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client; \
	  fi; \
	else \
	  echo "not root (or no apt): skipping system packages"; \
	fi
	@if v=$$(kubectl version --client 2>/dev/null | head -n 1) && [ -n "$$v" ]; then \
	  echo "kubectl: $$(command -v kubectl) -- $$v"; \
	else \
	  echo "kubectl: none that runs could be found or installed; as root: apt-get install kubernetes-client" \
	       "(Debian's 1.20), or any release from https://kubernetes.io/docs/tasks/tools/ on PATH"; \
	fi

python-deps: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
