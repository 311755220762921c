"""The PBX's TLS files: its certificate from the lab CA, with the owner and mode the lab file asks.

They go to ``config/<pbx>/tls/`` (``/etc/asterisk/tls`` in the sandbox)::

    pbx.crt  0644  the certificate (PJSIP cert_file, chan_sip tlscertfile)
    pbx.key  KEY   its private key (priv_key_file, tlsprivatekey)
    pbx.pem  KEY   both in one file (the walkthrough's "same pem")
    ca.crt   0644  the lab CA (ca_list_file, tlscafile)

The folder is ``root:asterisk 0750``: the asterisk group may enter it, nobody else.  The key
is owned by the user the lab file names (the walkthrough's ``chown``) with the mode it gives
(its ``chmod``); with ``owner: root`` and ``0600`` Asterisk — which runs as the user asterisk
— cannot read it, and says so in its log.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import LabFileError
from labkit.pki import LabCA, PkiError
from labkit.spec.model import TlsCertificate

CA_DIR = "pki"


@dataclass(frozen=True)
class ImageUser:
    """A user of a lab image, by the ids its own ``/etc/passwd`` gives (no user namespace:
    the ids are the same on the host)."""

    name: str
    uid: int
    gid: int

    @classmethod
    def of(cls, rootfs: Path, name: str) -> ImageUser:
        try:
            for line in (rootfs / "etc" / "passwd").read_text().splitlines():
                fields = line.split(":")
                if fields[0] == name:
                    return cls(name, int(fields[2]), int(fields[3]))
        except OSError:
            pass
        raise LabFileError(f"The image at {rootfs} has no user {name!r}.",
                           cause="the image was built without the Debian package that creates it",
                           hint="rebuild the image: `labkit images build --force`")


def make_lab_ca(directory: Path, lab: str) -> LabCA:
    """The lab's own CA (``config/pki``), made once per run; phones trust its ``ca.crt``."""
    ca = LabCA.create(f"{lab} Lab CA")
    ca.write(directory)
    return ca


def write_server_files(ca_dir: Path, certificate: TlsCertificate, names: list[str],
                       addresses: list[str], out_dir: Path, user: ImageUser) -> dict[str, Path]:
    """Issue the PBX's certificate (the lab file's variant) and write it as described above."""
    try:
        ca = LabCA.load(ca_dir)
        issued = ca.variant(certificate.variant, names, addresses) if certificate.variant != "good" \
            else ca.issue_server(names, addresses, key_type=certificate.key_type)
        files = issued.write(out_dir, "pbx")
    except PkiError as exc:
        raise LabFileError(f"pbx.tls.certificate: {exc.message}", cause=exc.cause, hint=exc.hint) from None
    key_owner = user.uid if certificate.owner == "asterisk" else 0
    mode = int(certificate.key_mode, 8)
    os.chown(out_dir, 0, user.gid)
    os.chmod(out_dir, 0o750)
    for path in (files.key, files.combined):
        os.chown(path, key_owner, user.gid)
        os.chmod(path, mode)
    return {"cert": files.cert, "key": files.key, "combined": files.combined, "ca": files.ca}
