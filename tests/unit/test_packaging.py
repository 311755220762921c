"""The set-up promises: exact pins, the same in pyproject.toml and environment.yml."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _pyproject_pins() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pins |= set(extra)
    return pins


def test_every_dependency_is_pinned_exactly():
    for requirement in _pyproject_pins():
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", requirement), requirement


def test_environment_yml_has_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = {p for p in pip_section if "==" in p}
    assert conda_pins == _pyproject_pins()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "sudo ./kit test" in readme and "sudo ./kit lab" in readme
    assert "./kit test" in (ROOT / ".ci" / "run").read_text()


def test_wheel_works_outside_the_repository(tmp_path):
    """The built wheel carries configs/ and data/: installed into a fresh virtualenv, away
    from the repository, `labkit replay <shipped capture>` works and lab files load."""
    import shutil
    import subprocess
    import sys
    import sysconfig

    # Built from a copy: pip builds in the source tree, and a stale build/ would hide a
    # missing package-data rule.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "build", "*.egg-info", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("labkit-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # The dependencies come from this test run's environment (a .pth line adds its
    # site-packages, whose own .pth files, the editable labkit's among them, are not read);
    # labkit itself only from the wheel.
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    # Notebook 07 audits the report's configuration shipped in configs/audit.
    where = subprocess.run([str(python), "-c", "import labkit, labkit.spec as s; print(labkit.__file__); "
                            "print(s.load_spec('first-call').name); from labkit.teaching import hardening as h; "
                            "from labkit.audit import audit; print(len(audit(h.AUDIT_FOLDER)))"],
                           cwd=work, check=True, capture_output=True, text=True, env=env).stdout.split()
    assert where[0].startswith(site) and where[1] == "first-call", where
    assert int(where[2]) > 0, where
    result = subprocess.run([str(venv / "bin" / "labkit"), "replay", "first-call-modern", "-o", "out"],
                            cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert (work / "out" / "report.md").is_file() and (work / "out" / "streams.csv").is_file()
    assert "RTP streams" in result.stdout


def test_ruff_is_clean():
    """Lint and import order (pyproject.toml [tool.ruff]) hold for every Python file."""
    import subprocess
    import sys
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "check", "--output-format", "concise", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
