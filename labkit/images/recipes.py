"""What goes into each lab image: the Debian suite, mirrors, packages, and how to check it.

An image is named after what it serves (:attr:`labkit.tracks.Track.image`): ``modern``
(Debian testing: Asterisk 22, SIPp 3.8 with TLS, baresip, dnsmasq — also the tools image
every track's phones run from) and ``legacy`` (Debian bullseye + security: Asterisk 16, the
last Debian Asterisk that still ships ``chan_sip.so``).  A recipe's *key* is the first 12
hex digits of the sha256 of its canonical JSON: any change to suite, mirrors, packages,
options or hooks names a new image, and old ones are never silently reused.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from labkit.tracks import LEGACY, MODERN

#: Bump when the way images are built changes in a way the recipe fields do not show
#: (e.g. a new extraction step); it is part of every key, so all images get rebuilt.
RECIPE_VERSION = 1


# The machine's clock may be ahead of the mirror's Release files; apt then refuses them
# as "expired".  testing's Release carries a Valid-Until one week after its Date; the
# bullseye and bullseye-security Release files (Nov 2026) carry none, so the option is
# only needed for modern but harmless for legacy.  Recommends are off so that the image
# holds exactly what --include asks for plus hard dependencies.
_APTOPTS = (
    'Acquire::Check-Valid-Until "false"',
    'APT::Install-Recommends "false"',
)
# dpkg path filters (dpkg(1) --path-exclude; the mmdebstrap manual shows this very use):
# documentation, man pages and translations are a third of a minbase system and no lab
# reads them.  Copyright files stay, as Debian's licences ask.
_DPKGOPTS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
# mmdebstrap --customize-hook runs on the host with the chroot directory as "$1" after
# all packages are installed.  mmdebstrap itself already removes apt's package lists and
# downloaded .debs afterwards (its "cleaning package lists and apt cache" step).
BASE_HOOKS = (
    # /etc/hosts belongs to netbase, which minbase does not install (legacy has none;
    # modern gets it only through python3, a dependency of sip-tester).  Without it
    # Asterisk logs getaddrinfo() errors for "localhost".  Written the same everywhere.
    "printf '127.0.0.1\\tlocalhost\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n'"
    ' > "$1/etc/hosts"',
    # Logs of the build itself and files dpkg leaves only for upgrades: pure size.
    'rm -rf "$1"/var/log/apt "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log'
    ' "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old',
)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the content of an image, plus how to check it.

    Only the build inputs enter :attr:`key`; the ``expect_*`` fields describe what
    :func:`verify_image` checks and can change without a rebuild.
    """

    suite: str
    mirrors: tuple[str, ...]
    packages: tuple[str, ...]
    aptopts: tuple[str, ...] = _APTOPTS
    dpkgopts: tuple[str, ...] = _DPKGOPTS
    hooks: tuple[str, ...] = BASE_HOOKS
    variant: str = "minbase"
    recipe_version: int = RECIPE_VERSION
    #: mmdebstrap --essential-hook commands: run after the Essential packages, *before*
    #: the --include packages (and their maintainer scripts) are installed.
    essential_hooks: tuple[str, ...] = ()
    #: mmdebstrap --skip steps (e.g. ``chroot/policy-rc.d``: we write our own, permanent one).
    skip: tuple[str, ...] = ()
    #: Digests of the host files the hooks copy in (``copy-in``): the hooks name a fixed path,
    #: so without them a change of those files would not name a new image.
    inputs: tuple[str, ...] = ()
    # -- verification only (not part of the key) --
    #: Paths relative to the rootfs; "a|b" means either, "*" globs (multiarch dirs).
    expect_files: tuple[str, ...] = field(default=(), compare=False)
    #: (dpkg package, label in the versions dict, required upstream version prefix)
    expect_versions: tuple[tuple[str, str, str], ...] = field(default=(), compare=False)
    #: (binary path, byte string that must occur in it), e.g. a TLS library it links.
    expect_linked: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def build_spec(self) -> dict:
        """The build inputs as plain JSON data (what the key is made of)."""
        return {
            "suite": self.suite,
            "mirrors": list(self.mirrors),
            "packages": sorted(self.packages),
            "aptopts": list(self.aptopts),
            "dpkgopts": list(self.dpkgopts),
            "hooks": list(self.hooks),
            "variant": self.variant,
            "recipe_version": self.recipe_version,
            # Only when used: a recipe without them keeps the key it always had.
            **({"essential_hooks": list(self.essential_hooks)} if self.essential_hooks else {}),
            **({"skip": list(self.skip)} if self.skip else {}),
            **({"inputs": list(self.inputs)} if self.inputs else {}),
        }

    @property
    def key(self) -> str:
        """First 12 hex digits of sha256 over the canonical JSON of :meth:`build_spec`."""
        canonical = json.dumps(self.build_spec(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def mmdebstrap_args(self, output: Path) -> list[str]:
        """The mmdebstrap command line that builds this recipe into ``output``.

        ``--mode=root`` is explicit: we run as root and want real owners and device
        nodes in the tarball; the output name ending in .tar.zst makes mmdebstrap pick
        the tar format and pipe it through zstd.
        """
        args = ["mmdebstrap", "--mode=root", f"--variant={self.variant}"]
        args += [f"--aptopt={opt}" for opt in self.aptopts]
        args += [f"--dpkgopt={opt}" for opt in self.dpkgopts]
        if self.packages:
            args.append("--include=" + ",".join(self.packages))
        args += [f"--skip={step}" for step in self.skip]
        args += [f"--essential-hook={hook}" for hook in self.essential_hooks]
        args += [f"--customize-hook={hook}" for hook in self.hooks]
        args += [self.suite, str(output), *self.mirrors]
        return args


_ASTERISK_MODS_MODERN = "usr/lib/*/asterisk/modules/"  # multiarch path since Debian 12
_KAMAILIO_MODS = "usr/lib/*/kamailio/modules/"
# A package's postinst may start its daemon (kamailio's runs `invoke-rc.d kamailio start`).
# mmdebstrap guards its own run with a temporary policy-rc.d and removes it at the end; the
# image keeps a permanent one instead (invoke-rc.d(8): exit status 101 = "action forbidden"),
# written before any --include package is configured, so no later `apt-get install` in the
# image starts a daemon either.
_POLICY_RC_D = (
    'printf "#!/bin/sh\\n# labkit: never start services in this image\\nexit 101\\n"'
    ' > "$1/usr/sbin/policy-rc.d"; chmod 0755 "$1/usr/sbin/policy-rc.d"'
)
_BARESIP_MODS = "usr/lib/baresip/modules/"

RECIPES: dict[str, Recipe] = {
    MODERN.image: Recipe(
        suite="forky",
        mirrors=("deb http://deb.debian.org/debian forky main",),
        packages=(
            # asterisk Depends on asterisk-modules (res_pjsip, chan_pjsip, res_srtp),
            # asterisk-config and asterisk-core-sounds-en: nothing else is needed.
            "asterisk",
            "sip-tester",  # SIPp 3.8, built with TLS, SCTP and PCAP play
            "baresip-core",  # the baresip binary and modules, without the GTK front end
            "dnsmasq-base",
            # The carrier's outbound proxy and registrar (issue 12): all modules in one
            # package; its SQL-free db_text tables (/usr/share/kamailio/dbtext) keep the
            # registrations across a restart.
            "kamailio",
            # The hardening lab (issue 14): an attacker's SIP scanner (svmap, svwar, svcrack),
            # the VPS's firewall and the ban that reads Asterisk's security log.
            "sipvicious",
            "nftables",
            "fail2ban",
            # dnsmasq-base Depends on "systemd | systemd-standalone-sysusers | ...":
            # naming the small alternative keeps all of systemd out of the image.
            "systemd-standalone-sysusers",
            "openssl",
            "ca-certificates",
            "iproute2",
            "procps",
        ),
        essential_hooks=(_POLICY_RC_D,),
        skip=("chroot/policy-rc.d",),
        expect_files=(
            "usr/sbin/asterisk",
            *(
                _ASTERISK_MODS_MODERN + m
                for m in ("chan_pjsip.so", "res_pjsip.so", "res_srtp.so")
            ),
            "usr/bin/sipp",
            "usr/bin/baresip",
            *(
                _BARESIP_MODS + m
                for m in ("ctrl_tcp.so", "aufile.so", "g711.so", "srtp.so", "sndfile.so")
            ),
            "usr/sbin/dnsmasq",
            "usr/sbin/kamailio",
            *(
                _KAMAILIO_MODS + m
                for m in ("tm.so", "registrar.so", "usrloc.so", "auth.so", "htable.so", "uac.so",
                          "nathelper.so", "sanity.so", "db_text.so")
            ),
            "usr/share/kamailio/dbtext/kamailio/location",
            "usr/sbin/policy-rc.d",
            "usr/bin/sipvicious_svwar|usr/bin/svwar",
            "usr/sbin/nft",
            "usr/bin/fail2ban-server",
            "etc/fail2ban/filter.d/asterisk.conf",
            "usr/bin/openssl",
            "usr/bin/ip|bin/ip|usr/sbin/ip",
            "usr/bin/ps|bin/ps",
            "etc/hosts",
        ),
        expect_versions=(
            ("asterisk", "asterisk", "22."),
            ("sip-tester", "sipp", "3.8"),
            ("baresip-core", "baresip", ""),
            ("openssl", "openssl", ""),
            ("dnsmasq-base", "dnsmasq", ""),
            # carrier.cfg.j2 was checked against the 6.x module documentation.
            ("kamailio", "kamailio", "6."),
        ),
        expect_linked=(("usr/bin/sipp", "libssl.so"),),
    ),
    LEGACY.image: Recipe(
        suite="bullseye",
        mirrors=(
            "deb http://deb.debian.org/debian bullseye main",
            "deb http://deb.debian.org/debian-security bullseye-security main",
        ),
        packages=("asterisk", "openssl", "iproute2", "procps"),
        expect_files=(
            "usr/sbin/asterisk",
            "usr/lib/asterisk/modules/chan_sip.so",  # removed upstream in Asterisk 21
            "usr/bin/openssl",
            "bin/ip|usr/bin/ip",
            "bin/ps|usr/bin/ps",
            "etc/hosts",
        ),
        expect_versions=(
            ("asterisk", "asterisk", "16."),
            ("openssl", "openssl", ""),
        ),
    ),
}
