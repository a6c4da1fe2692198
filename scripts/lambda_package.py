"""The Lambda package (build/lambda.zip): write it reproducibly, check it, compare two builds.

    python scripts/lambda_package.py zip DEPS_DIR TABLES_FILE OUT.zip   (scripts/build-lambda.sh)
    python scripts/lambda_package.py check PACKAGE.zip [LOCK.txt]        (scripts/check-deploy.sh)
    python scripts/lambda_package.py compare FIRST.zip SECOND.zip        (scripts/check-deploy.sh)

The zip holds the installed dependencies (requirements/lambda.txt), the packages `bot` and
`handlers`, and the tables file as `tables.toml`. Every entry gets a fixed time stamp and mode
and the entries are sorted, so the same inputs give the same bytes. `check` fails when a
development server is in it (devtools/: the local Slack API server, the sandboxes, the demo) or
when it unzips to more than Lambda's 250 MB, and, given the lock file, unless it holds exactly the
distributions and versions the lock pins. `compare` fails unless two builds hold the same
files with the same contents, and prints the distributions and versions they hold.
"""

from __future__ import annotations

import hashlib
import re
import stat
import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

# Lambda's limit for a function's code unzipped, layers included (250 MB = 262,144,000 bytes).
UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024
# Never in the package: the development servers (now under devtools/, formerly bot/sandbox,
# bot/slack/local_api.py, bot/demo.py), the tests and the benchmarks.
DEV_ONLY_PREFIXES = (
    "devtools/",
    "tests/",
    "benchmarks/",
    "bot/sandbox/",
    "bot/slack/local_api.py",
    "bot/demo.py",
)
OUR_PACKAGES = ("bot", "handlers")
# Left out of the copy: byte code (Lambda compiles on import; .pyc would name this machine's
# Python), test folders inside dependencies, and console scripts, whose first line names the
# Python of the machine that built them (Lambda never runs them).
SKIP_DIRS = {"__pycache__", "tests"}
SKIP_TOP_LEVEL = {"bin"}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold


def _files(root: Path, *, top_level_skips: set[str]) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        parts = path.relative_to(root).parts
        if parts[0] in top_level_skips or SKIP_DIRS.intersection(parts[:-1]):
            continue
        if path.suffix == ".pyc" or path.name == ".complete":
            continue
        found.append(path)
    return found


def _is_record(name: str) -> bool:
    return name.count("/") == 1 and name.endswith(".dist-info/RECORD")


def _record_inside_package(record: bytes) -> bytes:
    """A distribution's RECORD without the files installed outside the package (`../../bin/...`).

    Those are the console scripts left out; their hashes cover a first line naming the build
    machine's Python, so keeping them would make the package depend on where it was built.
    """
    return b"".join(line for line in record.splitlines(keepends=True) if not line.startswith(b"../"))


def dev_only(names: list[str]) -> list[str]:
    return [name for name in names if name.startswith(DEV_ONLY_PREFIXES)]


def write_zip(deps_dir: Path, tables_file: Path, out: Path) -> None:
    entries: dict[str, Path] = {}
    for path in _files(deps_dir, top_level_skips=SKIP_TOP_LEVEL):
        entries[path.relative_to(deps_dir).as_posix()] = path
    for package in OUR_PACKAGES:
        for path in _files(Path(package), top_level_skips=set()):
            entries[path.as_posix()] = path
    entries["tables.toml"] = tables_file  # TABLEBOT_CONFIG=/var/task/tables.toml
    refused = dev_only(list(entries))
    if refused:
        sys.exit(f"lambda-package: development files would be packaged: {', '.join(refused[:5])}")
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for name in sorted(entries):
            path = entries[name]
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.create_system = 3  # Unix: the mode below is read by Lambda
            executable = path.stat().st_mode & stat.S_IXUSR
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            if _is_record(name):
                zf.writestr(info, _record_inside_package(path.read_bytes()))
                continue
            with path.open("rb") as source, zf.open(info, "w") as target:
                while chunk := source.read(1 << 20):
                    target.write(chunk)
    tmp.replace(out)
    report(out)


def distributions(zf: zipfile.ZipFile) -> dict[str, str]:
    """Name -> version of every installed distribution in the package (its METADATA)."""
    found = {}
    for name in zf.namelist():
        if name.count("/") == 1 and name.endswith(".dist-info/METADATA"):
            headers = HeaderParser().parsestr(zf.read(name).decode("utf-8", "replace"))
            found[headers["Name"]] = headers["Version"]
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def report(package: Path) -> None:
    """Print the package's size and refuse it when it holds development files or is too big."""
    with zipfile.ZipFile(package) as zf:
        infos = zf.infolist()
        unzipped = sum(info.file_size for info in infos)
        refused = dev_only([info.filename for info in infos])
        versions = distributions(zf)
    print(
        f"lambda-package: {package}: {len(infos)} files, {len(versions)} distributions, "
        f"{package.stat().st_size / 1e6:.1f} MB zipped, {unzipped / 1e6:.1f} MB unzipped "
        f"(Lambda's limit: {UNZIPPED_LIMIT_BYTES / 1e6:.1f} MB)"
    )
    if refused:
        sys.exit(f"lambda-package: {package} holds development files: {', '.join(refused[:5])}")
    if unzipped > UNZIPPED_LIMIT_BYTES:
        sys.exit(
            f"lambda-package: {package} unzips to {unzipped:,} bytes, over Lambda's limit of {UNZIPPED_LIMIT_BYTES:,}: "
            "Lambda would refuse the deploy. Drop a dependency or move it to a layer."
        )


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_against_lock(package: Path, lock: Path) -> None:
    """Refuse a package whose distributions are not exactly the lock's pins."""
    pinned = {
        _canonical(m[1]): m[2]
        for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", lock.read_text(), re.MULTILINE)
    }
    with zipfile.ZipFile(package) as zf:
        shipped = {_canonical(name): version for name, version in distributions(zf).items()}
    if shipped != pinned:
        differences = [
            f"{name}: {shipped.get(name, '-')} in the package, {pinned.get(name, '-')} in {lock}"
            for name in sorted(shipped.keys() | pinned.keys())
            if shipped.get(name) != pinned.get(name)
        ]
        sys.exit(f"lambda-package: {package} does not hold exactly {lock}:\n  " + "\n  ".join(differences))
    print(f"lambda-package: {package} holds exactly the {len(pinned)} distributions of {lock}")


def manifest(package: Path) -> dict[str, str]:
    """Entry name -> sha256 of its contents."""
    with zipfile.ZipFile(package) as zf:
        return {info.filename: hashlib.sha256(zf.read(info)).hexdigest() for info in zf.infolist()}


def compare(first: Path, second: Path) -> None:
    a, b = manifest(first), manifest(second)
    with zipfile.ZipFile(first) as zf:
        versions_a = distributions(zf)
    with zipfile.ZipFile(second) as zf:
        versions_b = distributions(zf)
    only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    changed = sorted(name for name in a.keys() & b.keys() if a[name] != b[name])
    print("compare: distributions: " + ", ".join(f"{name}=={version}" for name, version in versions_a.items()))
    if versions_a != versions_b or only_a or only_b or changed:
        lines = [f"compare: {first} and {second} differ:"]
        for name in sorted(versions_a.keys() | versions_b.keys()):
            if versions_a.get(name) != versions_b.get(name):
                lines.append(f"  {name}: {versions_a.get(name, '-')} / {versions_b.get(name, '-')}")
        lines += [f"  only in the first: {n}" for n in only_a[:20]]
        lines += [f"  only in the second: {n}" for n in only_b[:20]]
        lines += [f"  different contents: {n}" for n in changed[:20]]
        sys.exit("\n".join(lines))
    same_bytes = first.read_bytes() == second.read_bytes()
    print(
        f"compare: {first} and {second}: the same {len(a)} files with the same contents and "
        f"{len(versions_a)} distributions at the same versions"
        + ("; the zips are byte for byte identical" if same_bytes else "")
    )


def main(argv: list[str]) -> None:
    match argv:
        case ["zip", deps_dir, tables_file, out]:
            write_zip(Path(deps_dir), Path(tables_file), Path(out))
        case ["check", package]:
            report(Path(package))
        case ["check", package, lock]:
            report(Path(package))
            check_against_lock(Path(package), Path(lock))
        case ["compare", first, second]:
            compare(Path(first), Path(second))
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
