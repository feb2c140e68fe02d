"""One import namespace: the wheel holds only ``lorawatch/`` (the design card's folders inside it,
their data files included) and works from a clean virtual environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tracked_copy(target: Path) -> Path:
    """The files git tracks (links kept as links), so that a stale build/ of the checkout, which
    setuptools would fold into the wheel, plays no part."""
    names = subprocess.run(["git", "ls-files", "-z"], check=True, capture_output=True, cwd=ROOT).stdout
    for name in filter(None, names.decode().split("\0")):
        source, copy = ROOT / name, target / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            copy.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, copy)
    return target


def test_the_wheel_holds_only_lorawatch_and_runs_from_a_clean_venv(tmp_path):
    dist = tmp_path / "dist"
    source = _tracked_copy(tmp_path / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    [wheel] = dist.glob("lorawatch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"lorawatch"}, tops
    assert len(tops) == 2, tops  # and its .dist-info
    for expected in (
        "lorawatch/alerts/engine.py",
        "lorawatch/alerts/rules/builtin.yaml",
        "lorawatch/monitors/canary.py",
        "lorawatch/registry/versions.py",
        "lorawatch/incidents/report.py",
        "lorawatch/serving/metrics.py",
        "lorawatch/app/dashboard.py",
        "lorawatch/app/app_pages/overview.py",
        "lorawatch/runbooks/pii_leak.md",
        "lorawatch/canary_data/core-v1.jsonl",
        "lorawatch/demo/adapters/manifest.json",
        "lorawatch/migrations/env.py",
    ):
        assert expected in names, expected

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    # third-party packages from the project's venv, as a plain path: its .pth files (our editable
    # install's finder among them) are not run from there
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LORAWATCH_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)

    help_ = run(str(venv / "bin" / "lorawatch"), "--help")
    assert help_.returncode == 0 and "canary" in help_.stdout, help_.stderr
    where = run(
        str(python),
        "-c",
        "import lorawatch.alerts.engine as e, lorawatch.monitors.series, lorawatch.app.auth; "
        "from lorawatch.alerts.rules import RUNBOOKS_DIR; from lorawatch.monitors.dataset import "
        "resolve_dataset; print(e.__file__); print(sorted(p.name for p in RUNBOOKS_DIR.glob('*.md'))[0]); "
        "print(resolve_dataset('smoke-v1').is_file())",
    )
    assert where.returncode == 0, where.stderr
    engine_file, first_runbook, shipped = where.stdout.split()
    assert engine_file.startswith(site) and first_runbook.endswith(".md") and shipped == "True"
    for generic in ("alerts", "monitors", "registry", "incidents", "serving", "app"):
        assert run(str(python), "-c", f"import {generic}").returncode != 0, (
            f"{generic} is importable as a top-level name"
        )
    dashboard = run(
        str(python),
        "-c",
        "import runpy, lorawatch.app as a, pathlib; "
        "runpy.run_path(str(pathlib.Path(a.__file__).parent / 'dashboard.py'))",
    )
    assert dashboard.returncode == 0, dashboard.stderr[-2000:]
