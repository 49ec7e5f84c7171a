"""Container networking: namespaces, veth pairs, bridges and addresses.

What a container on a bridge network is made of, from the bottom up::

    host network namespace                      container network namespace
    ----------------------                      ---------------------------
    bridge dockyard0 10.200.0.1/16               eth0 10.200.0.2/16 02:42:0a:c8:00:02
      |-- port dy1a2b3c4d5e  <== veth pair ==>   (the peer, renamed eth0)
      |-- port dy9f8e7d6c5b  <== veth pair ==>   ... another container's eth0
                                                 lo 127.0.0.1/8
                                                 default via 10.200.0.1

The modules, each one noun, the pure ones first:

``config``   the engine's network settings (``<root>/engine.json``: ``bip``,
             ``icc``, ``default_address_pools``, ``bridge``), like dockerd's flags
``ipam``     IP address management as pure functions: check subnets, gateways
             and ranges, pick a free subnet, allocate an address
``store``    the networks of a root as JSON records shaped like
             ``docker network inspect``, with their endpoints (one per
             attached container); allocation happens here, under a lock
``netns``    network namespaces pinned by a bind mount on a file, as
             ``ip netns add`` does
``link``     the kernel side over netlink (pyroute2): steps described as data
             (each can print the ``ip`` command that does the same) and
             performed in one place, :func:`link.perform`
``api``      ``engine.networks`` and :class:`~engine.network.api.Network`, in
             docker-py's shape

Attaching containers to networks (``sandbox``), publishing ports (``ports``,
``proxy``) build on these. Nothing here is imported by ``import engine``:
pyroute2 is loaded only when a kernel step runs.
"""
