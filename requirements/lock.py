"""The lock of every package version `make demo` and `make test` install, per CPython version.

    python requirements/lock.py compile   # `make lock`: resolve pyproject.toml again (needs PyPI and uv)
    python requirements/lock.py check     # CI: the locks still agree with pyproject.toml (offline)

``compile`` asks uv for one resolution per supported CPython on Linux x86-64, with every
extra LoraWatch's tests use, sha256 hashes for every file, and torch held at the version the
Makefile installs first. torch itself and the CUDA runtime wheels PyPI's torch pulls in
(``nvidia-*``, ``cuda-*``) are left out: the Makefile installs torch first (the CPU build from
the machine's disk, or the CUDA build a GPU machine already has), and the lock installs with
``--no-deps``, so nothing else can pull a multi-GB CUDA build in.

``check`` fails when pyproject.toml's requirements changed since the locks were written (the
header records their digest), when a lock misses a requirement, or pins a version outside its
range. `pip check` after the install (the Makefile runs it) covers the transitive set.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
PYTHONS = ("3.11", "3.12")
PLATFORM = "x86_64-manylinux_2_28"
EXTRAS = ("dev",)
TORCH = "torch==2.13.0"  # the Makefile's TORCH_SPEC
LEFT_OUT = re.compile(r"^(torch|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)$")
DIGEST_LINE = "# pyproject-requirements-sha256: "


def lock_path(python: str) -> Path:
    """The lock file of one CPython version."""
    return ROOT / "requirements" / f"py{python}.txt"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_digest() -> str:
    """sha256 over pyproject.toml's dependencies, optional dependencies and Python range."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    wanted = {k: project.get(k) for k in ("dependencies", "optional-dependencies", "requires-python")}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def _blocks(text: str) -> list[list[str]]:
    """uv's output split into entries: a requirement line and its hash and `# via` lines."""
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    return blocks


def compile_locks() -> int:
    """Resolve pyproject.toml for every supported CPython and write the lock files."""
    constraints = ROOT / "requirements" / ".torch-constraint.txt"
    constraints.write_text(TORCH + "\n", encoding="utf-8")
    try:
        for python in PYTHONS:
            command = [
                "uv",
                "pip",
                "compile",
                str(PYPROJECT),
                *[f"--extra={e}" for e in EXTRAS],
                f"--python-version={python}",
                f"--python-platform={PLATFORM}",
                "--generate-hashes",
                "--no-header",
                "--quiet",
                "-c",
                str(constraints),
            ]
            resolved = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
            kept = [block for block in _blocks(resolved) if not LEFT_OUT.match(_normalize(block[0].split("==")[0]))]
            header = [
                f"# LoraWatch's lock for CPython {python} on Linux x86-64: `make lock` writes it, do not edit.",
                f"# Installed with `pip install --no-deps --require-hashes`; {TORCH} is installed first and is",
                "# left out with the CUDA wheels (nvidia-*, cuda-*) that PyPI's torch depends on.",
                f"{DIGEST_LINE}{requirements_digest()}",
            ]
            lock_path(python).write_text(
                "\n".join(header + [line for b in kept for line in b]) + "\n", encoding="utf-8"
            )
            print(f"{lock_path(python).relative_to(ROOT)}: {len(kept)} packages")
    finally:
        constraints.unlink(missing_ok=True)
    return 0


def pins(path: Path) -> dict[str, str]:
    """Package name -> pinned version in one lock file."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line)
        if match:
            found[_normalize(match.group(1))] = match.group(2)
    return found


def check_locks() -> list[str]:
    """Why the locks disagree with pyproject.toml (empty when they agree)."""
    try:
        from packaging.markers import default_environment
        from packaging.requirements import Requirement
    except ImportError:  # a bare venv: pip carries its own copy
        from pip._vendor.packaging.markers import default_environment
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[assignment]

    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    wanted = list(project["dependencies"]) + [r for extra in EXTRAS for r in project["optional-dependencies"][extra]]
    problems = []
    digest = requirements_digest()
    for python in PYTHONS:
        path = lock_path(python)
        where = path.relative_to(ROOT)
        if not path.is_file():
            problems.append(f"{where}: missing; run `make lock`")
            continue
        if f"{DIGEST_LINE}{digest}" not in path.read_text(encoding="utf-8"):
            problems.append(
                f"{where}: pyproject.toml's requirements changed since the lock was written; run `make lock`"
            )
        pinned = pins(path)
        environment: dict[str, str] = {
            **{key: str(value) for key, value in default_environment().items()},
            "python_version": python,
            "python_full_version": f"{python}.0",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "x86_64",
        }
        for text in wanted:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            name = _normalize(requirement.name)
            version = TORCH.split("==")[1] if name == "torch" else pinned.get(name)
            if version is None:
                problems.append(
                    f"{where}: {requirement.name} is required by pyproject.toml but not locked; run `make lock`"
                )
            elif not requirement.specifier.contains(version, prereleases=True):
                problems.append(
                    f"{where}: {requirement.name}=={version} is outside pyproject.toml's {requirement.specifier}; "
                    "run `make lock`"
                )
    return problems


def main(argv: list[str]) -> int:
    """`compile` or `check`."""
    if argv[1:] == ["compile"]:
        return compile_locks()
    if argv[1:] == ["check"]:
        problems = check_locks()
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"locks agree with pyproject.toml: {', '.join(str(lock_path(p).relative_to(ROOT)) for p in PYTHONS)}")
        return 1 if problems else 0
    print("usage: python requirements/lock.py compile|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
