"""A whole class on one machine: one container per student, each able to run the kit's labs.

* :mod:`labkit.classroom.podman` — podman as the kit uses it: its own storage, run directory,
  network configuration and ``containers.conf``, so that nothing of the host's podman is
  touched and everything the kit makes can be listed and removed;
* :mod:`labkit.classroom.image` — the student image: Debian with the kit, JupyterLab and the
  notebooks, built offline from what the registries give (mmdebstrap, wheels downloaded on
  the host) and imported into that storage;
* :mod:`labkit.classroom.container` — a student's container: the capabilities the labs need
  and no more, the lab images mounted read-only, an internal network with no way out.
"""
