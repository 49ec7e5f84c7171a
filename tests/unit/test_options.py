"""docker's run-option values, parsed and checked as the docker CLI does."""

import pytest

from engine.errors import UsageError
from engine.runtime import options as O


@pytest.mark.parametrize("text, value", [
    ("100", 100), ("1k", 1024), ("64m", 64 << 20), ("64M", 64 << 20), ("1g", 1 << 30),
    ("1.5g", int(1.5 * (1 << 30))), ("512kb", 512 << 10), (4096, 4096),
])
def test_sizes(text, value):
    assert O.parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-1m", "1x"])
def test_bad_sizes(text):
    with pytest.raises(UsageError, match="invalid size"):
        O.parse_bytes(text, "--memory")


def test_cpus_and_ulimits_and_restart():
    assert O.parse_cpus("1.5") == 1_500_000_000 and O.parse_cpus("0.01") == 10_000_000
    assert O.parse_ulimit("nofile=1024:2048") == {"Name": "nofile", "Soft": 1024, "Hard": 2048}
    assert O.parse_ulimit("nproc=64") == {"Name": "nproc", "Soft": 64, "Hard": 64}
    for bad in ("nofile", "bogus=1", "nofile=2:1", "nofile=x"):
        with pytest.raises(UsageError):
            O.parse_ulimit(bad)
    assert O.parse_restart("on-failure:3") == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert O.parse_restart("always") == {"Name": "always", "MaximumRetryCount": 0}
    with pytest.raises(UsageError, match="invalid restart policy"):
        O.parse_restart("sometimes")
    with pytest.raises(UsageError, match="cannot be used"):
        O.parse_restart("always:3")


def test_capabilities_follow_dockers_rules():
    default = O.capability_set()
    assert len(default) == 14 and "CAP_NET_RAW" in default and "CAP_SYS_ADMIN" not in default
    mask = sum(1 << O.CAPABILITIES[c] for c in default)
    assert f"{mask:016x}" == "00000000a80425fb"  # CapEff of a default docker container
    assert "CAP_NET_ADMIN" in O.capability_set(cap_add=["net_admin"])
    assert "CAP_CHOWN" not in O.capability_set(cap_drop=["CHOWN"])
    assert O.capability_set(cap_drop=["ALL"], cap_add=["KILL"]) == ["CAP_KILL"]
    assert len(O.capability_set(privileged=True)) == len(O.CAPABILITIES)
    with pytest.raises(UsageError, match="unknown capability"):
        O.capability("CAP_MAKE_COFFEE")


def test_volumes_tmpfs_signals():
    assert O.parse_volume("/srv/data:/data:ro")["RW"] is False
    assert O.parse_volume("/srv/data/:/data")["Source"] == "/srv/data"
    for bad in ("relative:/data", "/a:rel", "/a:/b:xx", "/a"):
        with pytest.raises(UsageError):
            O.parse_volume(bad)
    assert O.parse_tmpfs("/run:rw,size=64m") == ("/run", "rw,size=64m")
    assert O.signal_number("SIGTERM") == 15 and O.signal_number("kill") == 9
    assert O.signal_number("10") == 10
    with pytest.raises(UsageError, match="Invalid signal"):
        O.signal_number("SIGNOPE")


def test_host_config_checks_combinations():
    hc = O.host_config(mem_limit="64m", cpus="0.5", pids_limit=20, ulimits=["nofile=10:20"],
                       restart_policy="on-failure:2", volumes=["/tmp:/host-tmp:ro"])
    assert hc["Memory"] == 64 << 20 and hc["NanoCpus"] == 500_000_000 and hc["PidsLimit"] == 20
    assert hc["Binds"] == ["/tmp:/host-tmp:ro"] and hc["RestartPolicy"]["MaximumRetryCount"] == 2
    with pytest.raises(UsageError, match="Minimum memory limit"):
        O.host_config(mem_limit="1m")
    with pytest.raises(UsageError, match="always set the Memory limit"):
        O.host_config(memswap_limit="1g")
    with pytest.raises(UsageError, match="larger than memory limit"):
        O.host_config(mem_limit="64m", memswap_limit="32m")
    with pytest.raises(UsageError, match="--restart and --rm"):
        O.host_config(auto_remove=True, restart_policy="always")
    with pytest.raises(UsageError, match="Nano CPUs and CPU Period"):
        O.host_config(cpus="1", cpu_period=100000)


def test_env_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_HOST", "x")
    f = tmp_path / "env"
    f.write_text("# comment\nA=1\n\n  B=two words\nFROM_HOST\n")
    assert O.parse_env_file(str(f)) == ["A=1", "B=two words", "FROM_HOST"]
    f.write_text("BAD KEY=1\n")
    with pytest.raises(UsageError, match="contains whitespaces"):
        O.parse_env_file(str(f))
