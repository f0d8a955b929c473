"""Outbound NAT: checked by reading the ruleset only, in a throwaway network namespace.

``unshare --net`` gives the check its own (empty) nftables ruleset and its
own ``ip_forward``, so nothing on the host changes and no traffic is sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from repeatr.net.config import Network
from repeatr.net.nat import ruleset

pytestmark = [pytest.mark.network, pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, subprocess
from ipaddress import IPv4Network
from repeatr.net.config import Network
from repeatr.net.nat import disable_nat, enable_nat, nat_enabled

def rules():
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout

net = Network(name="t", subnet=IPv4Network("10.254.213.0/24"), bridge="rpttest0")
other = Network(name="u", subnet=IPv4Network("10.254.214.0/24"), bridge="rpttest1")
out = {"before": nat_enabled(net)}
enable_nat(net)
enable_nat(net)  # idempotent
enable_nat(other, forwarding=False)
out["on"] = rules()
out["enabled"] = nat_enabled(net)
out["forward"] = open("/proc/sys/net/ipv4/ip_forward").read().strip()
disable_nat(net)
disable_nat(net)  # idempotent
out["off"] = rules()
out["after"] = nat_enabled(net)
print(json.dumps(out))
"""


def test_enable_disable_nat_in_a_private_netns() -> None:
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", SCRIPT],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["before"] is False and out["enabled"] is True and out["after"] is False
    on = out["on"]
    assert on.count("table ip repeatr_t {") == 1
    assert "type nat hook postrouting priority srcnat; policy accept;" in on
    assert "ip saddr 10.254.213.0/24 ip daddr != 10.254.213.0/24 masquerade" in on
    assert out["forward"] == "1"
    off = out["off"]
    assert "repeatr_t" not in off
    assert "table ip repeatr_u" in off  # other networks' NAT is untouched


def test_ruleset_text() -> None:
    text = ruleset(Network(name="default"))
    assert "table ip repeatr_default {" in text
    assert "ip saddr 10.213.0.0/16 ip daddr != 10.213.0.0/16 masquerade" in text
