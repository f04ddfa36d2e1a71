"""Upstream's NetworkPolicy e2e truth tables, policies after DNAT and on NodePorts, in a netns lab with the
iptables proxy mode and the vxlan backend (the tests are in ``tests/e2e/netpollab.py``)."""

import pytest

from tests.e2e.netpollab import (  # noqa: F401 - collected here, with this file's lab
    lab_fixture,
    test_policies_apply_after_dnat_and_trace_names_the_drop,
    test_policies_apply_to_nodeports_from_outside,
    test_truth_table,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

nlab = lab_fixture(("iptables", "vxlan"))
