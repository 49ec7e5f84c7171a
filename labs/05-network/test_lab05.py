"""Checker for lab 05, "Containers that find each other by name".

Run it after your own attempt (see README.md)::

    pytest labs/05-network

It reads the real state of your Dockyard root ($DOCKYARD_ROOT, or
/var/lib/dockyard) through the ``lab_engine`` fixture of Dockyard's pytest
plugin: the record of the network ``appnet`` (what ``dockyard network
inspect`` prints), the records of the containers ``db`` and ``web`` (what
``dockyard inspect`` prints) and their /etc/hosts files. Then it probes with
real traffic, all of it on this machine: an HTTP request from the host to
127.0.0.1:8080 ($LAB05_PORT), ``nc db 5432`` run inside ``web`` and ``wget
http://www/`` run inside ``db`` (``dockyard exec``). A container is asked to
look a name up only when its /etc/hosts has that name, so no question ever
goes to a name server. It starts, stops and removes nothing. Each test checks
one thing and, when it fails, says what to do. While a container or the
network is missing, the tests that need it are skipped.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import shlex
import socket

import pytest

NET = "appnet"
PORT = int(os.environ.get("LAB05_PORT") or 8080)   # the host port web is published on
ALIAS = "www"                                      # web's alias on appnet
PAGE = "hello from web"                            # what web serves at /
DB_ANSWER = "db: ok"                               # what db answers on every connection
DB_PORT = 5432
WEB_KEY = "80/tcp"                                 # where httpd listens in web
BUILTIN = ("bridge", "host", "none")
SERVE = """sh -c 'mkdir -p /www && echo "hello from web" > /www/index.html && exec httpd -f -p 80 -h /www'"""
GOOD_NET = f"dockyard network create {NET}"
GOOD_DB = f'dockyard run -d --name db --network {NET} busybox nc -ll -p {DB_PORT} -e echo "{DB_ANSWER}"'
PUBLISH = f"-p 127.0.0.1:{PORT}:80"
GOOD_WEB = f"dockyard run -d --name web --network {NET} --network-alias {ALIAS} {PUBLISH} busybox {SERVE}"
GOOD = {"db": GOOD_DB, "web": GOOD_WEB}
OTHER = {"db": "web", "web": "db"}


def require(condition, hint: str) -> None:
    """Fail with just the hint: the learner needs what to do, not the checker's code."""
    if not condition:
        pytest.fail(hint, pytrace=False)


def find(engine, name: str):
    from engine.errors import NotFound

    try:
        return engine.containers.get(name)
    except NotFound:
        return None


def find_network(engine, name: str):
    from engine.errors import NotFound

    try:
        network = engine.networks.get(name)
    except NotFound:
        return None
    return network if network.name == name else None   # not a match by ID prefix


def command_line(container) -> str:
    return shlex.join([container.attrs["Path"], *container.attrs["Args"]])


def mode_of(container) -> str:
    mode = container.attrs["HostConfig"].get("NetworkMode") or "bridge"
    return "bridge" if mode == "default" else mode


def networks_of(container) -> dict:
    """NetworkSettings.Networks: {network name: endpoint settings}."""
    return dict((container.attrs.get("NetworkSettings") or {}).get("Networks") or {})


def links_of(container) -> list[str]:
    return list(container.attrs["HostConfig"].get("Links") or [])


def ips_of(container) -> list[str]:
    return [n["IPAddress"] for n in networks_of(container).values() if n.get("IPAddress")]


def hosts_of(container) -> dict[str, str]:
    """The names the container's /etc/hosts resolves: {name: address} (the first line wins, as
    for the resolver). Read from the host: the file the engine bind-mounts as /etc/hosts."""
    path = container.attrs.get("HostsPath") or str(container.path / "hosts")
    names: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                words = line.split("#", 1)[0].split()
                for name in words[1:]:
                    names.setdefault(name, words[0])
    except OSError:
        pass
    return names


def exec_sh(container, script: str) -> tuple[int, str]:
    """``dockyard exec CONTAINER sh -c SCRIPT``: (exit status, stdout and stderr)."""
    from engine.errors import Conflict

    try:
        result = container.exec_run(["sh", "-c", script], stderr=True)
    except Conflict:
        container.reload()
        pytest.fail(f"{container.name} stopped while the checker was probing it. "
                    f"{exit_hint(container)}", pytrace=False)
    return result.exit_code, result.output.decode(errors="replace")


def exists_hint(name: str, engine, what: str) -> str:
    others = sorted(c.name for c in engine.containers.list(all=True))
    seen = f" The containers here are: {', '.join(others)}." if others else ""
    return (f"No container named {name} exists in the Dockyard root {engine.root}.{seen} {what} "
            f"Make it with --name {name} (and without --rm): `{GOOD[name]}`. If you ran dockyard "
            f"with another root (DOCKYARD_ROOT or --root), run this checker with the same "
            f"DOCKYARD_ROOT. (`dockyard ps -a` lists the containers that exist.)")


def default_bridge_hint(name: str, container) -> str:
    """Why a container on the default bridge cannot find the other one, and what to do."""
    links = links_of(container)
    linked = (f" It uses --link ({', '.join(links)}): that writes the linked container's address "
              f"into {name}'s own /etc/hosts when {name} starts -- and nothing into the other's: "
              f"a link is one-way, and a legacy feature of the default bridge. On a user-defined "
              f"network no link is needed." if links else "")
    return (f"{name} is on the default network, bridge, not on {NET}. On the default bridge "
            f"containers get no names: a lookup of `{OTHER[name]}` in {name} finds only "
            f"localhost and {name}'s own name in its /etc/hosts, then asks the host's name "
            f"servers, which have never heard of your containers (`bad address "
            f"'{OTHER[name]}'`).{linked} Put it on {NET}: `dockyard rm -f {name}`, then "
            f"`{GOOD[name]}` -- or, while it runs, `dockyard network connect {NET} {name}`.")


# -- fixtures: what the tests look at --------------------------------------------


@pytest.fixture
def appnet(lab_engine):
    network = find_network(lab_engine, NET)
    if network is None:
        pytest.skip(f"there is no network named {NET} yet (see test_appnet_exists)")
    return network


def _container(engine, name: str):
    container = find(engine, name)
    if container is None:
        pytest.skip(f"there is no container named {name} yet (see test_{name}_exists)")
    return container


def _running(container):
    if not container.attrs["State"]["Running"] or container.attrs["State"].get("Paused"):
        pytest.skip(f"{container.name} is not running (see test_{container.name}_is_running)")
    if os.geteuid() != 0:
        pytest.skip("exec into a container needs root")
    return container


@pytest.fixture
def db(lab_engine):
    return _container(lab_engine, "db")


@pytest.fixture
def web(lab_engine):
    return _container(lab_engine, "web")


@pytest.fixture
def running_db(db):
    return _running(db)


@pytest.fixture
def running_web(web):
    return _running(web)


# -- the network -------------------------------------------------------------------------


def test_appnet_exists(lab_engine):
    if find_network(lab_engine, NET) is not None:
        return
    users = sorted(n.name for n in lab_engine.networks.list() if n.name not in BUILTIN)
    similar = [n for n in users if n.lower().replace("-", "").replace("_", "") == NET]
    seen = (f" The user-defined networks here are: {', '.join(users)}." if users else
            " There is no user-defined network here at all: only the built-in ones (bridge, "
            "host, none).")
    named = (f" {similar[0]} is not {NET}: names must match exactly (`dockyard network rm "
             f"{similar[0]}`, after removing its containers)." if similar else "")
    pytest.fail(
        f"No network named {NET} exists in the Dockyard root {lab_engine.root}.{seen}{named} "
        f"Create it before the containers: `{GOOD_NET}` -- a user-defined bridge network, on "
        f"which containers find each other by name. (Without --network, containers go to the "
        f"default network, bridge, where they get no names.) `dockyard network ls` lists the "
        f"networks.", pytrace=False)


def test_appnet_is_a_reachable_bridge(appnet):
    driver = appnet.attrs.get("Driver")
    require(driver == "bridge", (
        f"{NET}'s driver is {driver}, not bridge. `dockyard network rm {NET}` (after removing "
        f"its containers) and `{GOOD_NET}` (-d bridge is the default)."))
    require(not appnet.attrs.get("Internal"), (
        f"{NET} was created with --internal: its bridge gets no address on the host and its "
        f"containers no route out, so the host cannot reach them -- not even through a published "
        f"port. Internal networks are for containers that only talk to each other. Remove the "
        f"containers, `dockyard network rm {NET}`, and create it again without --internal: "
        f"`{GOOD_NET}`."))


# -- the containers -------------------------------------------------------------------------


def test_db_exists(lab_engine):
    require(find(lab_engine, "db") is not None, exists_hint(
        "db", lab_engine, "It is the \"database\": busybox's nc, answering on port 5432."))


def test_web_exists(lab_engine):
    require(find(lab_engine, "web") is not None, exists_hint(
        "web", lab_engine, "It is busybox's web server, serving the page."))


def _is_running(container, lab_engine) -> None:
    name, state = container.name, container.attrs["State"]
    require(state["Status"] != "created", (
        f"{name} was created but never started: `dockyard start {name}`."))
    require(not state.get("Paused"), f"{name} is paused: `dockyard unpause {name}`.")
    require(state["Running"], exit_hint(container))


def exit_hint(container) -> str:
    """What to say about a container that has exited: its command ended, and why it may have."""
    name, state = container.name, container.attrs["State"]
    argv = [container.attrs["Path"], *container.attrs["Args"]]
    command, code = command_line(container), state["ExitCode"]
    why = ""
    if "httpd" in command and "-f" not in argv and "-f" not in command.split():
        why = (" busybox's httpd without -f goes to the background: its main process returns at "
               "once, and the container ends with it. -f keeps it in the foreground.")
    elif os.path.basename(argv[0]) == "nc" and "-l" in argv and "-ll" not in argv:
        why = (" `nc -l` (one l) serves ONE connection, then exits -- and the container with it, "
               "since nc is its main process. `nc -ll` keeps listening.")
    elif "nc" in argv and "-lk" in " ".join(argv):
        why = " busybox's nc has no -k option (that is another nc's): use -ll to keep listening."
    elif code in (137, 143):
        why = " It was stopped or killed."
    return (f"{name} has exited (status {code}): its command `{command}` ended, and a container "
            f"lives only as long as its command.{why} `dockyard logs {name}` shows what it said. "
            f"Remove it (`dockyard rm {name}`) and make it again: `{GOOD[name]}`.")


def test_db_is_running(db, lab_engine):
    _is_running(db, lab_engine)


def test_web_is_running(web, lab_engine):
    _is_running(web, lab_engine)


@pytest.mark.parametrize("name", ["db", "web"])
def test_on_appnet(lab_engine, name):
    container = _container(lab_engine, name)
    nets, mode = networks_of(container), mode_of(container)
    if NET not in nets:
        if mode == "host":
            pytest.fail(
                f"{name} uses the host's network (--network host): no namespace of its own, no "
                f"address, no name on {NET} -- and its servers take the host's own ports. Make it "
                f"again on {NET}: `dockyard rm -f {name}`, then `{GOOD[name]}`.", pytrace=False)
        if mode == "none" or mode.startswith("container:"):
            pytest.fail(
                f"{name} uses --network {mode}: it has no endpoint on {NET}, and "
                f"`dockyard network connect` cannot give it one. Make it again on {NET}: "
                f"`dockyard rm -f {name}`, then `{GOOD[name]}`.", pytrace=False)
        if "bridge" in nets or mode == "bridge":
            pytest.fail(default_bridge_hint(name, container), pytrace=False)
        pytest.fail(
            f"{name} is on {', '.join(nets) or mode}, not on {NET}: containers find each other "
            f"by name only on a network they share. `dockyard network connect {NET} {name}` (while "
            f"it runs), or make it again: `{GOOD[name]}`.", pytrace=False)
    if not container.attrs["State"]["Running"]:
        return  # an exited container has no address; test_<name>_is_running says what to do
    endpoint = nets[NET]
    network = find_network(lab_engine, NET)
    if network is not None and endpoint.get("NetworkID") and endpoint["NetworkID"] != network.id:
        pytest.fail(
            f"{name} was attached to an earlier network named {NET}, since removed and made again: "
            f"its endpoint belongs to network {endpoint['NetworkID'][:12]}, {NET} is now "
            f"{network.short_id}. `dockyard rm -f {name}` and make it again.", pytrace=False)
    ip = endpoint.get("IPAddress")
    require(ip, (f"{name} is running and recorded on {NET}, but has no address there "
                 f"(NetworkSettings.Networks.{NET}.IPAddress is empty). `dockyard restart {name}`."))
    if network is not None:
        subnet = network.attrs["IPAM"]["Config"][0]["Subnet"]
        require(ipaddress.ip_address(ip) in ipaddress.ip_network(subnet), (
            f"{name}'s address on {NET}, {ip}, is not in {NET}'s subnet {subnet}. "
            f"`dockyard restart {name}`."))


def test_appnet_lists_both(appnet, lab_engine):
    listed = {ep["Name"]: ep["IPv4Address"].split("/")[0]
              for ep in (appnet.reload().attrs.get("Containers") or {}).values()}
    checked = 0
    for name in ("db", "web"):
        container = find(lab_engine, name)
        if container is None or not container.attrs["State"]["Running"] \
                or NET not in networks_of(container):
            continue  # the tests above say what to do
        checked += 1
        ip = networks_of(container)[NET].get("IPAddress")
        require(name in listed, (
            f"{name}'s record says it is on {NET} ({ip}), but `dockyard network inspect {NET}` "
            f"does not list it among the network's containers ({', '.join(listed) or 'none'}). "
            f"`dockyard restart {name}` attaches it again."))
        require(listed[name] == ip, (
            f"`dockyard network inspect {NET}` lists {name} at {listed[name]}, but {name}'s record "
            f"says {ip}. `dockyard restart {name}`."))
    if not checked:
        pytest.skip(f"neither db nor web runs on {NET} yet (see test_on_appnet)")


def test_no_links(lab_engine):
    for name in ("db", "web"):
        container = find(lab_engine, name)
        links = links_of(container) if container else []
        require(not links, (
            f"{name} uses --link ({', '.join(links)}). A link is the legacy way of the default "
            f"bridge (the notes' `docker run --link=container_name:alias`): it writes the target's "
            f"address into {name}'s /etc/hosts when {name} starts, and the target never learns "
            f"{name}'s name -- one-way. On {NET} every container finds every other one by "
            f"name, both ways, with no link: `dockyard rm -f {name}`, then `{GOOD[name]}`."))


def test_web_alias(web, lab_engine):
    nets = networks_of(web)
    if NET not in nets:
        pytest.skip(f"web is not on {NET} (see test_on_appnet)")
    aliases = nets[NET].get("Aliases") or []
    if ALIAS in aliases:
        return
    db = find(lab_engine, "db")
    if db is not None and ALIAS in ((networks_of(db).get(NET) or {}).get("Aliases") or []):
        pytest.fail(f"The alias {ALIAS} is db's, not web's: on {NET}, `{ALIAS}` now means db. Give "
                    f"it to web (`--network-alias {ALIAS}` when you make web) and make db without it.",
                    pytrace=False)
    have = f" (its aliases: {', '.join(aliases)})" if aliases else ""
    pytest.fail(
        f"web has no alias {ALIAS} on {NET}{have}. An alias is one more name for a container on a "
        f"user-defined network: give it when you make web, `--network-alias {ALIAS}` next to "
        f"`--network {NET}` (`{GOOD_WEB}`), or reconnect the running web: `dockyard network "
        f"disconnect {NET} web && dockyard network connect --alias {ALIAS} {NET} web`. "
        f"(`dockyard inspect -f '{{{{json .NetworkSettings.Networks}}}}' web` shows its aliases.)",
        pytrace=False)


# -- the published port ----------------------------------------------------------------------


def _bindings_text(ports: dict) -> str:
    out = []
    for key, bindings in sorted(ports.items()):
        for b in bindings or []:
            out.append(f"{b['HostIp'] or '0.0.0.0'}:{b['HostPort']}->{key}")
    return ", ".join(out)


def test_web_published(running_web):
    ports = (running_web.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    bound = {key: b for key, b in ports.items() if b}
    hc, config = running_web.attrs["HostConfig"], running_web.attrs["Config"]
    redo = f"A container's ports are fixed when it is made: `dockyard rm -f web`, then `{GOOD_WEB}`."
    if not bound:
        exposed = sorted(config.get("ExposedPorts") or {})
        if exposed and not hc.get("PublishAllPorts"):
            pytest.fail(
                f"web exposes {', '.join(exposed)} but publishes nothing: --expose (and a "
                f"Dockerfile's EXPOSE) only declares a port -- 这里只是声明. Nothing on the host "
                f"forwards to web, so the host cannot reach its web server. Publish it with "
                f"{PUBLISH}. {redo}", pytrace=False)
        pytest.fail(
            f"web publishes no port (`dockyard port web` prints nothing): nothing on the host "
            f"forwards to it, so the host cannot reach its web server at 127.0.0.1:{PORT}. Add "
            f"{PUBLISH} -- `-p [ip:]host_port:container_port` (主机端口:容器端口). {redo}",
            pytrace=False)
    if WEB_KEY not in bound:
        pytest.fail(
            f"web publishes {_bindings_text(bound)}, but not its port 80/tcp, where httpd listens "
            f"(`httpd -p 80`). In `-p HOST_PORT:CONTAINER_PORT` the LEFT side is the host's port "
            f"and the RIGHT side the container's: {PUBLISH}. {redo}", pytrace=False)
    bindings = [(b["HostIp"] or "0.0.0.0", b["HostPort"]) for b in bound[WEB_KEY]]
    shown = _bindings_text({WEB_KEY: bound[WEB_KEY]})
    if not any(port == str(PORT) for _, port in bindings):
        asked = (hc.get("PortBindings") or {}).get(WEB_KEY)
        random = (" -P (--publish-all) picks a random free port for every exposed port; the task "
                  "wants a fixed one." if hc.get("PublishAllPorts") and not asked else "")
        pytest.fail(
            f"web publishes its port 80 as {shown}: on host port "
            f"{', '.join(port for _, port in bindings)}, not {PORT}.{random} In `-p "
            f"IP:HOST_PORT:CONTAINER_PORT` the host port is the middle part: {PUBLISH}. {redo}",
            pytrace=False)
    if any(ip in ("0.0.0.0", "::") for ip, _ in bindings):
        pytest.fail(
            f"web's port 80 is published on every address of the host ({shown}): anyone who "
            f"can reach this machine can reach it. `-p {PORT}:80` means `-p 0.0.0.0:{PORT}:80`; "
            f"publish on the loopback only: {PUBLISH}. {redo}", pytrace=False)
    require(("127.0.0.1", str(PORT)) in bindings, (
        f"web publishes its port 80 as {shown}, not on 127.0.0.1:{PORT}, the host's loopback: "
        f"{PUBLISH}. {redo}"))


def test_page_from_host(lab_engine):
    web = find(lab_engine, "web")
    state = ""
    if web is None:
        state = " There is no container named web (see test_web_exists)."
    elif not web.attrs["State"]["Running"]:
        state = (" web is not running (see test_web_is_running): a published port stops answering "
                 "when its container stops.")
    if web is not None and web.attrs["State"]["Running"]:
        # The port's proxy forwards to web's first address. On an --internal network the host
        # has no route to it: the connection would follow the host's default route, out of
        # this machine. So the checker does not try.
        first = next((name for name, n in networks_of(web).items() if n.get("IPAddress")), None)
        network = find_network(lab_engine, first) if first else None
        require(network is None or not network.attrs.get("Internal"), (
            f"web's published port forwards to its address on {first}, an --internal network: "
            f"the host has no route to it, so the port cannot work (the checker does not even "
            f"try). See test_appnet_is_a_reachable_bridge."))
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
    failure = None
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
    except ConnectionRefusedError:
        failure = "refused"
    except (http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine):
        failure = "closed"
    except (socket.timeout, TimeoutError):
        failure = "timeout"
    finally:
        connection.close()
    if failure == "refused":
        pytest.fail(
            f"Nothing answers at http://127.0.0.1:{PORT}/ (connection refused): no process of the "
            f"host listens on that port.{state} A published port is a small proxy process on the "
            f"host that forwards to the container: `dockyard port web` shows where web's port 80 "
            f"is published -- it must be {PUBLISH} (see test_web_published).", pytrace=False)
    if failure == "closed":
        pytest.fail(
            f"127.0.0.1:{PORT} accepted the connection, then closed it without an answer: the "
            f"proxy that publishes the port forwards to a port of web where nothing listens. "
            f"httpd listens on port 80 inside web (`httpd -p 80`): the right side of -p must be "
            f"80: {PUBLISH}. (`dockyard port web` shows which container port is published.)",
            pytrace=False)
    if failure == "timeout":
        pytest.fail(f"http://127.0.0.1:{PORT}/ did not answer within 5 s.{state} "
                    f"`dockyard logs web` and `dockyard port web` may say why.", pytrace=False)
    require(response.status != 404, (
        f"web answered `404 Not Found` at http://127.0.0.1:{PORT}/: the server runs and the port "
        f"is published, but there is no page. `httpd -h /www` serves the directory /www, and `/` "
        f"is /www/index.html: write it before starting the server, in the container's shell: "
        f"{SERVE}. (`dockyard exec web ls /www` shows what is there.)"))
    require(response.status == 200, (
        f"http://127.0.0.1:{PORT}/ answered {response.status} {response.reason}, not 200 OK."))
    ports = ((web.attrs.get("NetworkSettings") or {}).get("Ports") or {}) if web is not None else {}
    web_here = any(b["HostPort"] == str(PORT) for bindings in ports.values() for b in bindings or [])
    why = (f"web writes its page with `echo \"{PAGE}\" > /www/index.html` before `exec httpd`."
           if web_here else
           f"web does not publish host port {PORT}: another program of the host answered. "
           f"Publish web there ({PUBLISH}), or, if {PORT} is taken on your machine, choose "
           f"another port for start.sh and the checker: `export LAB05_PORT=8081`.")
    require(PAGE in body, (
        f"The page at http://127.0.0.1:{PORT}/ says {body.strip()[:200]!r}, not {PAGE!r}: {why}"))


# -- names, with real traffic ----------------------------------------------------------------


def _why_unresolved(source, target_name, name, lab_engine) -> str:
    """Why `name` is not in source's /etc/hosts (target_name is the container it should mean)."""
    target = find(lab_engine, target_name)
    src_nets, dst_nets = set(networks_of(source)), set(networks_of(target)) if target else set()
    if NET not in src_nets:
        back = [link for link in (links_of(target) if target else [])
                if link.partition(":")[0].lstrip("/") == source.name]
        one_way = (f" {target_name} has a --link to {source.name} ({back[0]}): that gives "
                   f"{target_name} a name for {source.name}, and {source.name} nothing for "
                   f"{target_name} -- links are one-way." if back else "")
        where = ("on the default network, bridge, where containers get no names"
                 if "bridge" in src_nets else f"not on {NET}")
        return f"{source.name} is {where} (see test_on_appnet).{one_way}"
    if NET not in dst_nets:
        return (f"{target_name} is not on {NET}, so {source.name} gets no line for it (see "
                f"test_on_appnet).")
    if name == ALIAS and ALIAS not in ((networks_of(target).get(NET) or {}).get("Aliases") or []):
        return f"web has no alias {ALIAS} on {NET}: `--network-alias {ALIAS}` (see test_web_alias)."
    return (f"Both are on {NET}, yet the line is missing: `dockyard restart {source.name}` "
            f"writes its /etc/hosts again.")


def _resolves(source, target, name: str, lab_engine) -> str:
    """The address `name` has in source's /etc/hosts; fail with a hint when it is not target's."""
    names = hosts_of(source)
    if name not in names:
        pytest.fail(
            f"{source.name} cannot resolve the name `{name}`: its /etc/hosts has no line for it "
            f"(`dockyard exec {source.name} cat /etc/hosts`). "
            f"{_why_unresolved(source, target.name, name, lab_engine)}", pytrace=False)
    ip = names[name]
    require(ip in ips_of(target), (
        f"In {source.name}, `{name}` resolves to {ip} (its /etc/hosts), which is not {target.name}'s "
        f"address ({', '.join(ips_of(target)) or 'none'}): a stale line, or the name belongs to "
        f"another container. Was the line added by hand, or with --add-host? On {NET}, without "
        f"links or --add-host, the engine keeps every container's /etc/hosts up to date."))
    return ip


def _nc_db(web) -> tuple[int, str]:
    return exec_sh(web, f"timeout 5 nc -w 3 db {DB_PORT} </dev/null")


def test_web_reaches_db_by_name(running_web, running_db, lab_engine):
    ip = _resolves(running_web, running_db, "db", lab_engine)
    code, out = _nc_db(running_web)
    if DB_ANSWER not in out:
        if "refused" in out:
            why = (f"the connection was refused: nothing listens on port {DB_PORT} in db. Its "
                   f"command is `{command_line(running_db)}`; the database is "
                   f"`nc -ll -p {DB_PORT} -e echo \"{DB_ANSWER}\"`.")
        elif code in (124, 143) or "timed out" in out:
            why = "no answer within 3 s: is the traffic between the two containers blocked?"
        else:
            why = f"it printed {out.strip()[:200]!r} (exit status {code})."
        pytest.fail(f"In web, `nc db {DB_PORT}` (db is {ip}) did not get `{DB_ANSWER}`: {why}",
                    pytrace=False)
    code, again = _nc_db(running_web)
    running_db.reload()
    require(DB_ANSWER in again, (
        f"In web, `nc db {DB_PORT}` got `{DB_ANSWER}` once, but not a second time "
        f"({again.strip()[:120]!r}); db is now {running_db.attrs['State']['Status']}. "
        f"`nc -l` (one l) serves ONE connection and exits -- and db with it. The database keeps "
        f"listening with `nc -ll`: `dockyard rm -f db`, then `{GOOD_DB}`."))


def test_db_reaches_web_by_alias(running_db, running_web, lab_engine):
    ip = _resolves(running_db, running_web, ALIAS, lab_engine)
    code, out = exec_sh(running_db, f"timeout 5 wget -qO- http://{ALIAS}/")
    if PAGE in out:
        return
    if "404" in out:
        why = "web answered 404 Not Found: there is no /www/index.html (see test_page_from_host)."
    elif "refused" in out:
        why = (f"the connection was refused: nothing listens on port 80 in web. Its command is "
               f"`{command_line(running_web)}`; httpd must listen on 80: `httpd -f -p 80 -h /www`.")
    elif code in (124, 143):
        why = "no answer within 5 s: is the traffic between the two containers blocked?"
    else:
        why = f"it printed {out.strip()[:200]!r} (exit status {code})."
    pytest.fail(f"In db, `wget -qO- http://{ALIAS}/` ({ALIAS} is {ip}) did not get the page: {why}",
                pytrace=False)
