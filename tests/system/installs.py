"""A fresh, non-editable install of this tree into a new venv, as a user's ``pip install .``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fresh_install(venv: Path) -> Path:
    """Make ``venv`` and install this tree into it (not editable); returns its bin directory.

    pip install --no-deps, offline (--no-build-isolation) when the venv's setuptools can build
    a wheel by itself, else with build isolation (fetches setuptools). The dependencies (trio,
    pyroute2, structlog) are the running interpreter's: a .pth file puts its site-packages
    directories (a venv's own and, with --system-site-packages, the base's) on the new venv's
    path. Python does not process .pth files found there, so this tree's editable install (an
    import hook started by one) stays out.
    """
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    dependencies = [path for path in sys.path
                    if Path(path).name in ("site-packages", "dist-packages")]
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([python, "-c", purelib], check=True, capture_output=True, text=True,
                          timeout=30)
    (Path(site.stdout.strip()) / "boothop-test-dependencies.pth").write_text(
        "".join(f"{path}\n" for path in dependencies))
    pip = [python, "-m", "pip", "install", "-q", "--no-deps"]
    offline = subprocess.run([*pip, "--no-build-isolation", str(ROOT)],
                             check=False, capture_output=True, text=True, timeout=300)
    if offline.returncode != 0:
        isolated = subprocess.run([*pip, str(ROOT)], check=False, capture_output=True, text=True,
                                  timeout=300)
        assert isolated.returncode == 0, offline.stderr[-2000:] + isolated.stderr[-2000:]
    found = subprocess.run([python, "-c", "import boothop.relay as m; print(m.__file__)"],
                           check=False, capture_output=True, text=True, timeout=30, cwd="/")
    assert found.stdout.startswith(str(venv)), f"not the venv's copy: {found.stdout}{found.stderr}"
    return venv / "bin"
