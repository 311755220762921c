"""The classroom's parts that need no container (labkit.classroom): the student image's recipe and
its key, the digest of the staged files, the start script, podman's private settings."""
from __future__ import annotations

import os
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest

from labkit.classroom import container, image, podman
from labkit.errors import EnvironmentProblem

ROOT = Path(__file__).resolve().parents[2]


def _wheel(path: Path, content: bytes, when: tuple) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(zipfile.ZipInfo("pkg/__init__.py", date_time=when), content)
    return path


def test_a_rebuilt_wheel_of_the_same_sources_keeps_the_digest(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _wheel(tmp_path / "a" / "kit.whl", b"x = 1\n", (2026, 1, 1, 0, 0, 0))
    _wheel(tmp_path / "b" / "kit.whl", b"x = 1\n", (2026, 12, 4, 17, 0, 0))
    assert (tmp_path / "a" / "kit.whl").read_bytes() != (tmp_path / "b" / "kit.whl").read_bytes()
    assert image.digest_of(tmp_path / "a") == image.digest_of(tmp_path / "b")
    _wheel(tmp_path / "b" / "kit.whl", b"x = 2\n", (2026, 1, 1, 0, 0, 0))
    assert image.digest_of(tmp_path / "a") != image.digest_of(tmp_path / "b")
    (tmp_path / "a" / "start").write_text("#!/bin/sh\n")
    assert image.digest_of(tmp_path / "a") != image.digest_of(tmp_path / "b")


def test_the_recipe_installs_the_staged_wheels_offline_and_its_key_follows_them():
    one, other = image.recipe("a" * 64), image.recipe("b" * 64)
    assert one.key != other.key and one.key == image.recipe("a" * 64).key
    hooks = "\n".join(one.hooks)
    assert f"copy-in {image.inputs_dir()}/wheels /opt" in hooks
    assert "--no-index --find-links /opt/wheels" in hooks and image.REQUIREMENT in hooks
    assert one.suite == "bookworm" and "tini" in one.packages
    # the lab images' recipes keep their keys: the new field only counts when used
    assert "inputs" not in image.Recipe(suite="x", mirrors=(), packages=()).build_spec()


def test_the_images_extras_are_pinned_in_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = image.REQUIREMENT.split("[")[1].rstrip("]").split(",")
    assert set(wanted) <= set(extras)
    assert extras["singleuser"] == ["jupyterhub==6.1.1"]


def test_the_start_script_copies_the_notebooks_once_then_runs_the_command(tmp_path):
    script = tmp_path / "start"
    script.write_text(image.START_SCRIPT)
    script.chmod(0o755)
    source = tmp_path / "kit-notebooks"
    source.mkdir()
    (source / "00-orientation.ipynb").write_text("kit version")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "LABKIT_NOTEBOOKS_SOURCE": str(source)}
    ran = subprocess.run([str(script), "echo", "started"], env=env, capture_output=True, text=True)
    assert ran.stdout == "started\n"
    copied = tmp_path / "home" / "notebooks" / "00-orientation.ipynb"
    assert copied.read_text() == "kit version"
    copied.write_text("the student's work")
    subprocess.run([str(script), "true"], env=env, check=True)
    assert copied.read_text() == "the student's work"


def test_podman_runs_on_the_kits_own_storage_and_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    argv = podman.argv("ps")
    assert argv[:5] == ["podman", "--root", str(tmp_path / "classroom" / "storage"), "--runroot",
                        str(podman.RUN_DIR)]
    env = podman.environment()
    conf = Path(env["CONTAINERS_CONF"]).read_text()
    assert 'runtime = "runc"' in conf and f'network_config_dir = "{tmp_path}/classroom/networks"' in conf
    assert "nofile=20000:20000" in conf


def test_a_missing_podman_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(podman.shutil, "which", lambda tool: None if tool == "podman" else "/usr/bin/" + tool)
    with pytest.raises(EnvironmentProblem, match="podman not found") as caught:
        podman.check_installed()
    assert "apt-get install podman runc" in caught.value.explain()


def test_a_student_container_gets_what_the_labs_need_and_no_more(tmp_path, monkeypatch):
    """The command line of a student's container: the two capabilities, /proc/sys writable, the
    lab images read-only, a labelled home volume, the internal network, the limits."""
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    calls = []

    def run(*args, check=True, **kw):
        calls.append(args)
        return subprocess.CompletedProcess(args, 1 if args[:2] == ("volume", "exists") else 0, "", "")
    monkeypatch.setattr(podman, "run", run)
    monkeypatch.setattr(container.keylog, "library", lambda: tmp_path / "tls" / "keylog.so")
    name = container.start("ada", "localhost/labkit-student:k", "class-net", command=("sleep", "infinity"))
    assert name == "labkit-student-ada"
    assert calls[1] == ("volume", "create", "--label", container.LABEL, "labkit-student-ada-home")
    args = calls[2]
    pairs = list(zip(args, args[1:]))
    assert [v for k, v in pairs if k == "--cap-add"] == ["NET_ADMIN", "SYS_ADMIN"]
    assert "--privileged" not in args
    assert ("--security-opt", "unmask=/proc/sys") in pairs and ("--network", "class-net") in pairs
    mounted = [v for k, v in pairs if k == "--volume"]
    assert mounted == [f"{tmp_path}/images:{tmp_path}/images:ro", f"{tmp_path}/tls:{tmp_path}/tls:ro",
                       "labkit-student-ada-home:/home/student"]
    assert ("--memory", "1g") in pairs and ("--pids-limit", "2048") in pairs
    assert args[-3:] == ("localhost/labkit-student:k", "sleep", "infinity")


def test_the_host_table_drops_what_comes_from_a_student_bridge():
    from labkit.classroom import firewall
    script = firewall.rules("class-2026", "cni-podman7")
    assert firewall.table_name("class-2026") == "labkit_class_class_2026"
    assert script.startswith("table inet labkit_class_class_2026 {")   # inet: IPv4 and IPv6 alike
    input_chain = script.split("chain input")[1].split("chain forward")[0]
    forward_chain = script.split("chain forward")[1]
    assert "hook input" in input_chain and 'iifname "cni-podman7" counter drop' in input_chain
    assert 'iifname "cni-podman7" counter drop' in forward_chain
    assert 'oifname "cni-podman7" counter drop' in forward_chain
