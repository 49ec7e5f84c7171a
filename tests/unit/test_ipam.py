"""IP address management as pure functions: docker's checks, subnets from pools, addresses."""

import ipaddress

import pytest

from engine.errors import Conflict, EngineError, UsageError
from engine.network import ipam
from engine.network.config import AddressPool

N = ipaddress.IPv4Network


# -- parse_config: docker's checks and wording --------------------------------------------


def test_a_valid_config_is_returned_parsed():
    net, gw, rng = ipam.parse_config("10.1.0.0/16", "10.1.0.254", "10.1.128.0/17")
    assert (net, gw, rng) == (N("10.1.0.0/16"), ipaddress.IPv4Address("10.1.0.254"), N("10.1.128.0/17"))
    assert ipam.parse_config(None) == (None, None, None)
    assert ipam.parse_config("10.1.0.0/16") == (N("10.1.0.0/16"), None, None)


@pytest.mark.parametrize("gateway, ip_range", [("10.0.0.1", None), (None, "10.0.0.0/24")])
def test_gateway_or_range_need_a_subnet(gateway, ip_range):
    with pytest.raises(UsageError, match="^every ip-range or gateway must have a corresponding subnet$"):
        ipam.parse_config(None, gateway, ip_range)


@pytest.mark.parametrize("subnet, message", [
    ("foo", "invalid subnet foo: invalid CIDR block notation"),
    ("10.0.0.0", "invalid subnet 10.0.0.0: invalid CIDR block notation"),
    ("10.0.0.0/33", "invalid subnet 10.0.0.0/33: invalid CIDR block notation"),
    ("10.1.1.1/24", "invalid subnet 10.1.1.1/24: it should be 10.1.1.0/24"),
    ("fd00::/64", "IPv4 only"),
    ("10.0.0.0/31", "too small"),
])
def test_bad_subnets(subnet, message):
    with pytest.raises(ipam.IPAMError) as e:
        ipam.parse_config(subnet)
    assert str(e.value).startswith("invalid network config:\n")
    assert message in str(e.value)


def test_gateway_checks():
    with pytest.raises(UsageError, match="invalid gateway 10.9.9.9: parent subnet 10.1.0.0/16 "
                                         "doesn't contain this address"):
        ipam.parse_config("10.1.0.0/16", "10.9.9.9")
    with pytest.raises(UsageError, match="invalid gateway nope: invalid address"):
        ipam.parse_config("10.1.0.0/16", "nope")
    with pytest.raises(UsageError, match="broadcast address"):
        ipam.parse_config("10.1.0.0/16", "10.1.255.255")


def test_range_checks_are_all_reported_as_a_list():
    with pytest.raises(UsageError) as e:
        ipam.parse_config("10.1.0.1/24", "10.9.9.9", "10.1.0.5/8")
    lines = str(e.value).splitlines()
    assert lines[0] == "invalid network config:"
    assert lines[1:] == [
        "* invalid subnet 10.1.0.1/24: it should be 10.1.0.0/24",
        "* invalid ip-range 10.1.0.5/8: CIDR block is bigger than its parent subnet 10.1.0.0/24",
        "* invalid ip-range 10.1.0.5/8: it should be 10.0.0.0/8",
        "* invalid gateway 10.9.9.9: parent subnet 10.1.0.0/24 doesn't contain this address",
    ]
    with pytest.raises(UsageError, match="parent subnet 10.1.0.0/24 doesn't contain ip-range"):
        ipam.parse_config("10.1.0.0/24", None, "10.2.0.0/25")


def test_default_gateway_is_the_first_host_address():
    assert str(ipam.default_gateway(N("10.201.3.0/24"))) == "10.201.3.1"


# -- pick_subnet -------------------------------------------------------------------------


POOLS = [AddressPool("10.201.0.0/16", 24)]


def test_first_subnet_of_the_first_pool():
    assert ipam.pick_subnet(POOLS, []) == N("10.201.0.0/24")


def test_used_networks_and_host_routes_are_skipped():
    used = [N("10.201.0.0/24"), N("10.201.2.0/24")]
    routes = [N("10.201.1.128/25")]
    assert ipam.pick_subnet(POOLS, used, routes) == N("10.201.3.0/24")
    # a bigger used network covers many candidates
    assert ipam.pick_subnet(POOLS, [N("10.201.0.0/20")]) == N("10.201.16.0/24")


def test_pools_are_tried_in_order_and_accept_dicts_and_pairs():
    pools = [{"base": "10.5.0.0/23", "size": 24}, ("10.6.0.0/16", 20)]
    assert ipam.pick_subnet(pools, [N("10.5.0.0/23")]) == N("10.6.0.0/20")


def test_exhausted_pools():
    with pytest.raises(ipam.Exhausted, match="could not find an available, non-overlapping IPv4 "
                                             "address pool among the defaults"):
        ipam.pick_subnet([AddressPool("10.7.0.0/23", 24)], [N("10.7.0.0/24")], [N("10.7.1.0/24")])
    assert issubclass(ipam.Exhausted, EngineError)


def test_overlapping_names_the_first_other_network():
    assert ipam.overlapping("10.0.0.0/24", [N("192.168.0.0/16"), N("10.0.0.128/25")]) == N("10.0.0.128/25")
    assert ipam.overlapping("10.0.0.0/24", [N("10.0.1.0/24")]) is None


# -- allocate ------------------------------------------------------------------------------


def test_first_free_address_skips_network_gateway_and_taken():
    assert ipam.allocate("10.0.0.0/24", "10.0.0.1", None, set()) == "10.0.0.2"
    assert ipam.allocate("10.0.0.0/24", "10.0.0.1", None, {"10.0.0.2", "10.0.0.3"}) == "10.0.0.4"
    # a gateway elsewhere frees .1
    assert ipam.allocate("10.0.0.0/24", "10.0.0.254", None, set()) == "10.0.0.1"
    # released addresses are handed out again, lowest first
    assert ipam.allocate("10.0.0.0/24", "10.0.0.1", None, {"10.0.0.3"}) == "10.0.0.2"


def test_taken_may_carry_prefixes():
    assert ipam.allocate("10.0.0.0/24", "10.0.0.1", None, {"10.0.0.2/24"}) == "10.0.0.3"


def test_ip_range_bounds_automatic_addresses():
    assert ipam.allocate("10.0.0.0/24", "10.0.0.1", "10.0.0.128/25", set()) == "10.0.0.128"
    # the range's first address is the subnet's network address: skipped
    assert ipam.allocate("10.0.0.0/24", "10.0.0.1", "10.0.0.0/30", set()) == "10.0.0.2"


def test_exhausted_network():
    taken = {"10.0.0.2"}
    with pytest.raises(ipam.Exhausted, match="no available IPv4 addresses on this network's "
                                             "address pools"):
        ipam.allocate("10.0.0.0/30", "10.0.0.1", None, taken)
    with pytest.raises(ipam.Exhausted):
        ipam.allocate("10.0.0.0/24", "10.0.0.1", "10.0.0.252/30", {"10.0.0.252", "10.0.0.253",
                                                                   "10.0.0.254"})


def test_wanted_address():
    assert ipam.allocate("10.0.0.0/24", "10.0.0.1", None, set(), "10.0.0.77") == "10.0.0.77"
    # like docker, a static address may lie outside the ip-range (but in the subnet)
    assert ipam.allocate("10.0.0.0/24", "10.0.0.1", "10.0.0.128/25", set(), "10.0.0.5") == "10.0.0.5"


@pytest.mark.parametrize("wanted", ["10.0.0.1", "10.0.0.0", "10.0.0.255", "10.0.0.9"])
def test_wanted_address_in_use(wanted):
    with pytest.raises(ipam.AddressInUse, match="^Address already in use$"):
        ipam.allocate("10.0.0.0/24", "10.0.0.1", None, {"10.0.0.9"}, wanted)
    assert issubclass(ipam.AddressInUse, Conflict)


def test_wanted_address_outside_or_invalid():
    with pytest.raises(UsageError, match="no configured subnet or ip-range contain the IP address "
                                         "10.9.0.5"):
        ipam.allocate("10.0.0.0/24", "10.0.0.1", None, set(), "10.9.0.5")
    with pytest.raises(UsageError, match="invalid IPv4 address: 10.0.0.300"):
        ipam.allocate("10.0.0.0/24", "10.0.0.1", None, set(), "10.0.0.300")
    with pytest.raises(UsageError, match="invalid IPv4 address: 0.0.0.0"):
        ipam.allocate("10.0.0.0/24", "10.0.0.1", None, set(), "0.0.0.0")


# -- MAC addresses -------------------------------------------------------------------------


def test_docker_mac_from_the_address():
    assert ipam.mac_for("172.17.0.2") == "02:42:ac:11:00:02"
    assert ipam.mac_for("10.200.0.2") == "02:42:0a:c8:00:02"


def test_parse_mac():
    assert ipam.parse_mac("02:42:AC:11:00:09") == "02:42:ac:11:00:09"
    assert ipam.parse_mac("02-42-ac-11-00-09") == "02:42:ac:11:00:09"
    for bad in ("02:42:ac:11:00", "zz:42:ac:11:00:09", "0242ac110009"):
        with pytest.raises(UsageError, match="is not a valid mac address"):
            ipam.parse_mac(bad)
    with pytest.raises(UsageError, match="multicast"):
        ipam.parse_mac("01:00:5e:00:00:01")
