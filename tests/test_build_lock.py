"""The lock files and the Lambda package writer: pinned, hashed, reproducible, no dev servers.

The lock files are read as text (no network): every dependency pyproject.toml names must be
pinned with its hashes, and the Lambda package must ship the versions the tests run. The zip
writer (scripts/lambda_package.py) runs as scripts/build-lambda.sh runs it, on a small tree
made here; the real package is built twice and compared by scripts/check-deploy.sh.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK_HINT = "run `bash scripts/lock.sh` and commit requirements/*.txt"


def pins(lock: str) -> dict[str, str]:
    """Name -> version of every `name==version` entry, each required to carry sha256 hashes."""
    text = (ROOT / "requirements" / lock).read_text()
    found: dict[str, str] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2] if text.startswith("#") else text):
        head = entry.split("\\", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^ ;]+)(\s*;.*)?", head)
        assert match, f"requirements/{lock}: {head!r} is not pinned with =="
        assert "--hash=sha256:" in entry, f"requirements/{lock}: {head} has no hash"
        found[canonicalize_name(match[1])] = match[2]
    return found


def project() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"runtime": data["dependencies"], "dev": data["optional-dependencies"]["dev"]}


def test_the_lambda_lock_pins_every_runtime_dependency_at_the_tested_version() -> None:
    lambda_pins, dev_pins = pins("lambda.txt"), pins("dev.txt")
    for spec in project()["runtime"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in lambda_pins, f"{requirement.name} is not in requirements/lambda.txt: {LOCK_HINT}"
        assert requirement.specifier.contains(lambda_pins[name]), (
            f"requirements/lambda.txt pins {name}=={lambda_pins[name]}, outside {spec!r}: {LOCK_HINT}"
        )
    # The Lambda package ships exactly the versions the development environment tests.
    for name, version in lambda_pins.items():
        assert dev_pins.get(name) == version, f"{name}: lambda.txt {version}, dev.txt {dev_pins.get(name)}: {LOCK_HINT}"


def test_the_dev_lock_pins_the_dev_tools_the_build_backend_and_the_locker() -> None:
    dev_pins = pins("dev.txt")
    build_backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for spec in [*project()["runtime"], *project()["dev"], *build_backend, "uv"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in dev_pins, f"{requirement.name} is not in requirements/dev.txt: {LOCK_HINT}"
        assert requirement.specifier.contains(dev_pins[name]), f"dev.txt: {name}=={dev_pins[name]} outside {spec!r}"


def test_the_deploy_check_lock_pins_checkov_and_cfn_lint() -> None:
    check_pins = pins("deploy-check.txt")
    assert {"checkov", "cfn-lint"} <= check_pins.keys()


def test_setup_and_build_install_only_from_the_locks() -> None:
    setup = (ROOT / "scripts/setup.sh").read_text()
    assert "--require-hashes --no-deps -r requirements/dev.txt" in setup
    build = (ROOT / "scripts/build-lambda.sh").read_text()
    assert "lock=requirements/lambda.txt" in build and "--require-hashes --no-deps" in build
    check = (ROOT / "scripts/check-deploy.sh").read_text()
    assert "--require-hashes --no-deps" in check and "requirements/deploy-check.txt" in check


def _tree(root: Path) -> tuple[Path, Path]:
    """A small installed-dependencies folder, the bot's packages and a tables file under root."""
    deps = root / "deps"
    (deps / "lib_a").mkdir(parents=True)
    (deps / "lib_a" / "__init__.py").write_text("VALUE = 1\n")
    (deps / "lib_a" / "__pycache__").mkdir()
    (deps / "lib_a" / "__pycache__" / "x.cpython-312.pyc").write_bytes(b"\0")
    info = deps / "lib_a-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lib-a\nVersion: 1.2.3\n\n")
    (info / "RECORD").write_text("lib_a/__init__.py,sha256=abc,10\n../../bin/lib-a,sha256=depends-on-the-machine,99\n")
    (deps / "bin").mkdir()
    (deps / "bin" / "lib-a").write_text("#!/some/build/machine/python\n")
    for package in ("bot", "handlers"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
    (root / "handlers" / "poll_jobs.py").write_text("def handler(event, context): ...\n")
    tables = root / "tables.toml"
    tables.write_text("[targets]\n")
    return deps, tables


def _zip(root: Path, deps: Path, tables: Path, out: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/lambda_package.py"), "zip", str(deps), str(tables), out],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_package_is_the_same_bytes_every_time_and_holds_only_what_lambda_runs(tmp_path: Path) -> None:
    deps, tables = _tree(tmp_path)
    first = _zip(tmp_path, deps, tables, "first.zip")
    assert first.returncode == 0, first.stderr
    assert "unzipped" in first.stdout and "1 distributions" in first.stdout
    # Touched files (new times) and a second run give the same bytes.
    (tmp_path / "bot" / "__init__.py").write_text("")
    second = _zip(tmp_path, deps, tables, "second.zip")
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "first.zip").read_bytes() == (tmp_path / "second.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "first.zip") as zf:
        names = zf.namelist()
        record = zf.read("lib_a-1.2.3.dist-info/RECORD").decode()
        modes = {info.external_attr >> 16 & 0o777 for info in zf.infolist()}
    assert names == sorted(names)
    assert set(names) == {
        "bot/__init__.py",
        "handlers/__init__.py",
        "handlers/poll_jobs.py",
        "lib_a-1.2.3.dist-info/METADATA",
        "lib_a-1.2.3.dist-info/RECORD",
        "lib_a/__init__.py",
        "tables.toml",
    }  # no byte code, no console scripts
    assert "../../bin" not in record and "lib_a/__init__.py" in record
    assert modes == {0o644}

    compared = subprocess.run(
        [sys.executable, str(ROOT / "scripts/lambda_package.py"), "compare", "first.zip", "second.zip"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert compared.returncode == 0, compared.stderr
    assert "lib-a==1.2.3" in compared.stdout and "byte for byte identical" in compared.stdout


def test_two_packages_that_differ_are_told_apart(tmp_path: Path) -> None:
    deps, tables = _tree(tmp_path)
    assert _zip(tmp_path, deps, tables, "first.zip").returncode == 0
    (deps / "lib_a-1.2.3.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: lib-a\nVersion: 1.2.4\n\n")
    (deps / "lib_a" / "new.py").write_text("")
    assert _zip(tmp_path, deps, tables, "second.zip").returncode == 0
    compared = subprocess.run(
        [sys.executable, str(ROOT / "scripts/lambda_package.py"), "compare", "first.zip", "second.zip"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert compared.returncode == 1
    assert "lib-a: 1.2.3 / 1.2.4" in compared.stderr
    assert "only in the second: lib_a/new.py" in compared.stderr


@pytest.mark.parametrize("dev_file", ["devtools/slack_api.py", "devtools/sandbox/bigpanda.py", "bot/sandbox/x.py"])
def test_a_development_server_is_never_packaged(tmp_path: Path, dev_file: str) -> None:
    deps, tables = _tree(tmp_path)
    # In the dependencies (as a stray top-level package) or in the bot's own tree.
    where = deps if dev_file.startswith("devtools/") else tmp_path
    path = where / dev_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    refused = _zip(tmp_path, deps, tables, "out.zip")
    assert refused.returncode != 0
    assert "development files would be packaged" in refused.stderr and dev_file in refused.stderr
    assert not (tmp_path / "out.zip").exists()


def test_a_package_over_lambdas_limit_is_refused(tmp_path: Path) -> None:
    # 251 MiB of zeros: a small zip on disk, over the limit unzipped.
    package = tmp_path / "big.zip"
    with (
        zipfile.ZipFile(package, "w", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open("data.bin", "w", force_zip64=True) as target,
    ):
        chunk = b"\0" * (1 << 20)
        for _ in range(251):
            target.write(chunk)
    checked = subprocess.run(
        [sys.executable, str(ROOT / "scripts/lambda_package.py"), "check", str(package)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 1
    assert "over Lambda's limit" in checked.stderr


def test_the_package_must_hold_exactly_the_lock(tmp_path: Path) -> None:
    deps, tables = _tree(tmp_path)
    assert _zip(tmp_path, deps, tables, "out.zip").returncode == 0

    def check(lock_text: str) -> subprocess.CompletedProcess[str]:
        lock = tmp_path / "lock.txt"
        lock.write_text(lock_text)
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts/lambda_package.py"), "check", "out.zip", str(lock)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    good = check("# header\nlib-a==1.2.3 \\\n    --hash=sha256:00\n")
    assert good.returncode == 0, good.stderr
    assert "holds exactly the 1 distributions" in good.stdout
    other_version = check("lib_a==1.2.4 \\\n    --hash=sha256:00\n")
    assert other_version.returncode == 1
    assert "lib-a: 1.2.3 in the package, 1.2.4 in" in other_version.stderr
    missing = check("lib-a==1.2.3 \\\n    --hash=sha256:00\nlib-b==2.0 \\\n    --hash=sha256:00\n")
    assert missing.returncode == 1
    assert "lib-b: - in the package, 2.0 in" in missing.stderr
