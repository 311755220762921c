"""Live: the student image and two students' containers (labkit.classroom), as a class uses them.

The image is built (or reused: same key) from this repository; two students' containers start on
an internal network with the capabilities the labs need; each finds the kit's notebooks in its
home, brings up ``first-call`` and places a two-way call, while the other's lab runs too; neither
sees the other's processes or files; neither reaches the host's own address nor an outside one;
removing the classroom leaves no container, volume or network of the kit.  The test's traffic
stays inside the containers (their labs' namespaces) and their internal network.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import threading

import pytest

from labkit.classroom import container, firewall, image, podman

pytestmark = pytest.mark.live
STUDENTS = ("ada", "ben")
NETWORK = "labkit-class-test"
LAB_AND_CALL = """
import json
from labkit.grading.probes import two_way_call
from labkit.lab import Lab
lab = Lab.load("first-call", track="modern")
lab.up()
two_way, why, _ = two_way_call(lab, "bob", "6000")
print(json.dumps({"two_way": two_way, "why": why}))
"""


@pytest.fixture(scope="module")
def classroom():
    """The image, an internal network and two students' containers; everything removed after."""
    assert container.ours() == {"containers": [], "volumes": [], "networks": []}, "a classroom is left over"
    built = image.build(progress=False)
    network = container.create_network(NETWORK)
    bridge = json.loads(podman.run("network", "inspect", network).stdout)[0]["network_interface"]
    try:
        names = {s: container.start(s, built.tag, network, command=("sleep", "infinity")) for s in STUDENTS}
        yield built, names
    finally:
        removed = container.clean()
        assert removed["networks"] == [network]
        assert sorted(removed["containers"]) == sorted(container.PREFIX + s for s in STUDENTS)
        assert container.ours() == {"containers": [], "volumes": [], "networks": []}
        assert firewall.tables() == []
        # nothing of the network is left on the host either: its bridge is gone
        assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0, bridge


def host_address() -> str:
    """One of the machine's own addresses (what a container must not reach): the first global
    IPv4 address of an interface that is not a container bridge."""
    shown = subprocess.run(["ip", "-json", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True)
    for link in json.loads(shown.stdout or "[]"):
        if not link["ifname"].startswith(("cni-", "podman", "veth")):
            for info in link.get("addr_info", []):
                return info["local"]
    raise AssertionError("this machine has no global IPv4 address to try")


def test_the_image_holds_the_kit_for_the_images_python(classroom):
    built, _ = classroom
    assert built.versions["python"] == image.TARGET_PYTHON
    assert built.versions["labkit"] and built.versions["jupyterlab"] == "4.6.6"
    assert built.versions["jupyterhub"] == "6.1.1"
    assert built.tag == f"{image.REPOSITORY}:{built.key}"
    # the same inputs name the same image: a second build reuses it
    again = image.build(progress=False)
    assert again.reused and again.tag == built.tag
    assert not image.inputs_dir().exists()  # the staged wheels are not left behind, reused or built


def test_each_home_gets_the_notebooks(classroom):
    _, names = classroom
    for name in names.values():
        listed = container.execute(name, "ls", "/home/student/notebooks").stdout.split()
        assert {"00-orientation.ipynb", "02b-nat-vps.ipynb", "07-hardening.ipynb"} <= set(listed), listed


def test_two_students_each_run_a_lab_and_a_call_apart(classroom):
    _, names = classroom
    results = {}

    def lab_and_call(student):
        out = container.execute(names[student], "python", "-c", LAB_AND_CALL, timeout=240).stdout
        results[student] = json.loads(out.strip().splitlines()[-1])

    threads = [threading.Thread(target=lab_and_call, args=(s,)) for s in STUDENTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {s: r["two_way"] for s, r in results.items()} == dict.fromkeys(STUDENTS, True), results
    # both labs are up: each student sees one Asterisk, their own, and the same lab name
    for name in names.values():
        pids = container.execute(name, "pgrep", "-x", "asterisk").stdout.split()
        assert len(pids) == 1, (name, pids)
        status = container.execute(name, "labkit", "status").stdout
        assert "first-call" in status and "6001" in status
    # a file of one student's home is not in the other's
    container.execute(names["ada"], "sh", "-c", "echo mine > /home/student/ada-notes.txt")
    found = container.execute(names["ben"], "find", "/", "-path", "/proc", "-prune", "-o", "-path", "/sys", "-prune",
                              "-o", "-name", "ada-notes.txt", "-print", check=False).stdout
    assert found == "", found   # nowhere in ben's container (not through a mounted cache either)
    assert container.execute(names["ada"], "cat", "/home/student/ada-notes.txt").stdout == "mine\n"
    for name in names.values():
        container.execute(name, "labkit", "down")
        assert container.execute(name, "pgrep", "-x", "asterisk", check=False).returncode != 0


def connect_from(name: str, target: str, port: int) -> str:
    """'connected' or 'refused …': a TCP connection attempt from inside a container."""
    probe = (f"import socket; s = socket.socket(); s.settimeout(3)\n"
             f"try:\n    s.connect(({target!r}, {port})); print('connected')\n"
             f"except OSError as e:\n    print('refused', e)")
    return container.execute(name, "python", "-c", probe, timeout=30).stdout.strip()


def test_no_way_out_of_the_internal_network_even_with_a_route_of_ones_own(classroom):
    """Neither the machine's address nor an outside one answers, as the container is made and
    after the student (who holds NET_ADMIN) adds a default route towards an address the bridge
    holds on the host (as the hub's will): the host's table drops it — and only the table: without
    it the same connection gets through."""
    _, names = classroom
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    port = listener.getsockname()[1]
    bridge = container.bridge_of(NETWORK)
    subnet = json.loads(podman.run("network", "inspect", NETWORK).stdout)[0]["subnets"][0]["subnet"]
    gateway = str(next(ipaddress.ip_network(subnet).hosts()))
    # 198.18.0.1: the benchmarking range (RFC 2544), never a real host — nothing may leave
    targets = (host_address(), "198.18.0.1")
    try:
        for target in targets:
            assert connect_from(names["ada"], target, port).startswith("refused"), target
        subprocess.run(["ip", "addr", "add", f"{gateway}/{subnet.split('/')[1]}", "dev", bridge], check=True)
        container.execute(names["ada"], "ip", "route", "add", "default", "via", gateway)
        before = firewall.dropped(NETWORK)
        for target in targets:
            assert connect_from(names["ada"], target, port).startswith("refused"), target
        assert firewall.dropped(NETWORK) > before
        firewall.remove(NETWORK)
        try:
            assert connect_from(names["ada"], host_address(), port) == "connected"
        finally:
            firewall.close(NETWORK, bridge)
        assert connect_from(names["ada"], host_address(), port).startswith("refused")
    finally:
        listener.close()
        subprocess.run(["ip", "addr", "del", f"{gateway}/{subnet.split('/')[1]}", "dev", bridge], capture_output=True)
