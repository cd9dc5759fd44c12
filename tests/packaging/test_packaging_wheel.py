"""The package as a user gets it: build the sdist and the wheel, install the wheel into a fresh
virtualenv, and run the ``ijepa`` command from there (help, version, a 3-step tiny training).

Nothing is downloaded: the build runs without isolation (``setuptools`` and ``build`` come with
the ``dev`` extra), and the fresh virtualenv sees the dependencies already installed next to the
running interpreter through a ``.pth`` line (not a multi-GB torch download). ``pip`` still
resolves the wheel's declared dependencies against them (``--no-index``), so a dependency the
wheel forgot to declare, or one it declares but nobody installed, fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import ijepa
from ijepa.recipes import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[2]
DIST_NAME = "torch_ijepa"

pytestmark = pytest.mark.slow


def _clean_env() -> dict[str, str]:
    """The environment without anything that points Python or pip at this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env.update(OMP_NUM_THREADS="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


#: Run in the venv: every requirement of the installed wheel (extras aside) is satisfied.
_CHECK_REQUIREMENTS = """
import sys
from importlib.metadata import PackageNotFoundError, distribution, version
from packaging.requirements import Requirement
dist = distribution("torch-ijepa")
where = str(dist.locate_file(""))
assert where.startswith(sys.argv[1]), f"torch-ijepa metadata read from {where}"
unmet = []
for text in dist.requires or []:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # an optional extra
    try:
        have = version(req.name)
    except PackageNotFoundError:
        unmet.append(f"{req} (missing)")
        continue
    if not req.specifier.contains(have, prereleases=True):
        unmet.append(f"{req} (have {have})")
print("ok" if not unmet else "unmet: " + ", ".join(unmet))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``python -m build`` on a copy of the sources: ``{"wheel": ..., "sdist": ...}``."""
    pytest.importorskip("build", reason="the dev extra installs 'build'")
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    out = root / "dist"
    # sdist first, then the wheel built from the unpacked sdist: a file missing from the sdist
    # breaks the wheel
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)], root)
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0], "root": root}


def test_wheel_and_sdist_carry_version_license_and_command(built: dict[str, Path]) -> None:
    version = ijepa.__version__
    assert built["wheel"].name == f"{DIST_NAME}-{version}-py3-none-any.whl"
    assert built["sdist"].name == f"{DIST_NAME}-{version}.tar.gz"
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = set(whl.namelist())
        info = f"{DIST_NAME}-{version}.dist-info"
        metadata = whl.read(f"{info}/METADATA").decode()
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
    assert f"{info}/licenses/LICENSE" in names
    assert "ijepa/__init__.py" in names and "ijepa/py.typed" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert "Name: torch-ijepa" in metadata and f"Version: {version}" in metadata
    assert "License-Expression: MIT" in metadata
    assert "ijepa = ijepa.cli:main" in entry_points
    with tarfile.open(built["sdist"]) as sdist:
        members = set(sdist.getnames())
    top = f"{DIST_NAME}-{version}"
    assert {f"{top}/LICENSE", f"{top}/README.md", f"{top}/src/ijepa/cli/__init__.py"} <= members


def test_wheel_installs_into_a_fresh_venv_and_trains(built: dict[str, Path]) -> None:
    root = built["root"]
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = _run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root
    )
    # the dependencies already on disk, after the venv's own site-packages (so the wheel wins)
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib.strip(), "_ijepa_test_deps.pth").write_text("\n".join(sorted(here)) + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-index", "--no-deps",
         "--force-reinstall", str(built["wheel"])],
        root,
    )  # fmt: skip
    unmet = _run([str(py), "-c", _CHECK_REQUIREMENTS, str(venv)], root).strip()
    assert unmet == "ok", unmet
    ijepa_cmd = venv / "bin" / "ijepa"
    assert ijepa_cmd.is_file(), "the wheel did not install the ijepa command"

    where = _run([str(py), "-c", "import ijepa; print(ijepa.__file__)"], root).strip()
    assert Path(where).is_relative_to(venv), f"ijepa imported from {where}, not the venv"
    assert _run([str(ijepa_cmd), "--version"], root).strip() == f"ijepa {ijepa.__version__}"
    help_text = _run([str(ijepa_cmd), "--help"], root)
    for command in ("train", "demo", "eval", "embed", "search", "convert"):
        assert command in help_text

    run_dir = root / "run"
    _run(
        [str(ijepa_cmd), "train", "--preset", "demo", *TINY_OVERRIDES, "data.batch_size=16",
         "optimization.max_steps=3", "logging.log_every=1", f"logging.folder={run_dir}"],
        root,
    )  # fmt: skip
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["loss"] > 0 for r in records)
    assert (run_dir / "jepa-latest.pth.tar").is_file()
