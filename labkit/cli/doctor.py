"""``labkit doctor``: can this machine run labs?  Each check says what to do when it fails."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from labkit import images

#: Host tools and the Debian package that brings each.
TOOLS = {
    "ip": "iproute2", "bwrap": "bubblewrap", "mmdebstrap": "mmdebstrap", "zstd": "zstd",
    "tshark": "tshark", "dumpcap": "wireshark-common", "espeak-ng": "espeak-ng",
    "nft": "nftables", "iptables": "iptables", "conntrack": "conntrack", "ss": "iproute2",
    "dig": "dnsutils", "mergecap": "wireshark-common", "editcap": "wireshark-common",
    "gcc": "gcc", "openssl": "openssl",
}


@dataclass
class Check:
    name: str
    level: str  # ok | warn | fail
    detail: str
    hint: str = ""


def run_checks() -> list[Check]:
    checks = [_root(), _netns()]
    checks += [_tool(tool, package) for tool, package in TOOLS.items()]
    checks += [_image(image) for image in images.RECIPES]
    checks.append(_leftovers())
    return checks


def _root() -> Check:
    if os.geteuid() == 0:
        return Check("root", "ok", "running as root")
    return Check("root", "fail", "not root: namespaces and sandboxes need CAP_NET_ADMIN/CAP_SYS_ADMIN",
                 "run labs with sudo; replay mode (LABKIT_MODE=replay) works without root")


def _netns() -> Check:
    if not Path("/proc/self/ns/net").exists():
        return Check("network namespaces", "fail", "the kernel has no network namespaces",
                     "use a Linux kernel with CONFIG_NET_NS (any distribution kernel has it)")
    if os.geteuid() != 0:
        return Check("network namespaces", "warn", "supported by the kernel; not tested (not root)")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return Check("network namespaces", "fail", f"cannot create one: {probe.stderr.strip()}",
                     "inside a container, run it with --privileged (or CAP_SYS_ADMIN)")
    return Check("network namespaces", "ok", "can be created")


def _tool(tool: str, package: str) -> Check:
    path = shutil.which(tool)
    if path:
        return Check(tool, "ok", path)
    return Check(tool, "fail", "not found", f"apt-get install {package} (or run `make setup`)")


def _image(track: str) -> Check:
    info = images.image_info(track)
    if info is not None and info.ready:
        versions = ", ".join(f"{k} {v}" for k, v in sorted(info.versions.items()))
        return Check(f"image {track}", "ok", versions or str(info.path))
    if info is not None and info.tarball.exists():
        return Check(f"image {track}", "ok", "tarball cached; extracted on first use")
    return Check(f"image {track}", "warn", "not built yet",
                 f"`labkit images build {track}` (about 30 s); `labkit up` also builds it")


def _leftovers() -> Check:
    from labkit.state import recorded_labs
    records = recorded_labs()
    if not records:
        return Check("leftover labs", "ok", "none recorded")
    names = ", ".join(r.name for r in records)
    return Check("leftover labs", "warn", f"recorded: {names}",
                 "`labkit status` shows whether they run; `labkit clean` removes crashed ones")
