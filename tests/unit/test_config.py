"""Image defaults merged with the user's request, as docker merges them."""

import pytest

from engine.errors import UsageError
from engine.runtime import names
from engine.runtime.container import merge_config, merge_env, runtime_env


class FakeImage:  # only the run defaults matter here
    def __init__(self, **config):
        self.run_config = config


IMAGE = FakeImage(Env=["PATH=/bin", "LANG=C"], Cmd=["sh"], Entrypoint=None, WorkingDir="/srv")


def test_image_defaults_apply():
    c = merge_config(IMAGE)
    assert (c["Entrypoint"], c["Cmd"], c["WorkingDir"]) == (None, ["sh"], "/srv")


def test_command_replaces_cmd_and_entrypoint_drops_it():
    assert merge_config(IMAGE, command=["ls"])["Cmd"] == ["ls"]
    c = merge_config(FakeImage(Entrypoint=["/init"], Cmd=["--serve"]), entrypoint="echo")
    assert (c["Entrypoint"], c["Cmd"]) == (["echo"], None)
    c = merge_config(FakeImage(Entrypoint=["/init"], Cmd=["--serve"]))
    assert (c["Entrypoint"], c["Cmd"]) == (["/init"], ["--serve"])
    c = merge_config(FakeImage(Entrypoint=["/init"], Cmd=["x"]), entrypoint="", command=["true"])
    assert (c["Entrypoint"], c["Cmd"]) == (None, ["true"])


def test_string_command_is_split_like_docker_py():
    assert merge_config(IMAGE, command="echo 'hello world'")["Cmd"] == ["echo", "hello world"]


def test_env_replace_or_append(monkeypatch):
    monkeypatch.setenv("FROM_HOST", "yes")
    monkeypatch.delenv("UNSET_HERE", raising=False)
    env = merge_env(["PATH=/bin", "LANG=C"], ["LANG=C.UTF-8", "NEW=1", "FROM_HOST", "UNSET_HERE"])
    assert env == ["PATH=/bin", "LANG=C.UTF-8", "NEW=1", "FROM_HOST=yes"]
    assert merge_env([], {"A": "1"}) == ["A=1"]
    with pytest.raises(UsageError):
        merge_env([], ["=x"])


def test_runtime_env_adds_hostname_and_home_like_docker():
    config = merge_config(FakeImage(Env=["PATH=/usr/bin"]), hostname="box")
    assert runtime_env(config) == ["PATH=/usr/bin", "HOSTNAME=box", "HOME=/root"]


def test_relative_workdir_is_refused_with_dockers_words():
    with pytest.raises(UsageError, match="needs to be an absolute path"):
        merge_config(IMAGE, working_dir="app")


@pytest.mark.parametrize("hostname", ["", "x" * 65, "a/b"])
def test_bad_hostnames(hostname):
    with pytest.raises(UsageError):
        merge_config(IMAGE, hostname=hostname)


@pytest.mark.parametrize("name, ok", [("web", True), ("/web", True), ("a", False), ("-x", False),
                                      ("my_app.1-2", True), ("sp ace", False), ("é", False)])
def test_container_names(name, ok):
    if ok:
        assert names.validate(name) == name.lstrip("/")
    else:
        with pytest.raises(UsageError, match="Invalid container name"):
            names.validate(name)


def test_generated_names_are_valid():
    for _ in range(50):
        assert names.VALID_NAME.match(names.generate())
