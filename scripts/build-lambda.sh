#!/usr/bin/env bash
# Builds build/lambda.zip, the one code package of both Lambda functions (serverless.yml
# `package.artifact`): the bot's code, its Python dependencies as manylinux x86_64 wheels for
# CPython 3.12 (the Lambda runtime, whatever Python runs this script), and the tables file.
#
#   bash scripts/build-lambda.sh [TABLES_FILE]     (default: tables.toml, or $TABLEBOT_TABLES_FILE)
#
# No Docker: pip picks binary wheels for the Lambda platform (--platform/--python-version), so it
# works the same on a laptop and in CI. The dependencies are installed once per set of
# requirements (build/lambda-deps-<hash>/) and reused; the bot's code is copied every time.
set -euo pipefail
cd "$(dirname "$0")/.."

tables_file=${1:-${TABLEBOT_TABLES_FILE:-tables.toml}}
python=.venv/bin/python
if [ ! -x "$python" ]; then
  echo "build-lambda: .venv is missing; run: bash scripts/setup.sh" >&2
  exit 2
fi
if [ ! -f "$tables_file" ]; then
  echo "build-lambda: the tables file $tables_file does not exist." >&2
  echo "  Write it (see examples/tables.toml) and pass its path: bash scripts/build-lambda.sh PATH" >&2
  exit 2
fi
# A deployed bot with a broken tables file fails on every request: refuse to package it.
"$python" - "$tables_file" <<'PY'
import sys

from bot.config import ConfigError, load_tables_file

try:
    tables = load_tables_file(sys.argv[1])
except ConfigError as exc:
    sys.exit(f"build-lambda: {exc}")
print(f"build-lambda: tables file {sys.argv[1]}: {len(tables.tables)} table(s), {len(tables.targets)} target(s)")
PY

# The runtime dependencies, exactly as pyproject.toml lists them.
requirements=$("$python" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
# Lambda python3.12 runs on Amazon Linux 2023 (glibc 2.34): any manylinux wheel up to 2_34 fits.
pip_platform=(--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64)
deps_hash=$(printf '%s\n%s\n' "$requirements" "${pip_platform[*]} cp312" | sha256sum | cut -c1-16)
deps_dir="build/lambda-deps-$deps_hash"
if [ ! -f "$deps_dir/.complete" ]; then
  echo "build-lambda: installing dependencies for CPython 3.12 manylinux x86_64 into $deps_dir"
  rm -rf build/lambda-deps-*
  mapfile -t reqs <<<"$requirements"
  "$python" -m pip install -q --disable-pip-version-check --no-compile \
    --target "$deps_dir" "${pip_platform[@]}" --implementation cp --python-version 3.12 \
    --only-binary=:all: "${reqs[@]}"
  touch "$deps_dir/.complete"
fi

"$python" - "$deps_dir" "$tables_file" <<'PY'
"""Zip the dependencies, the bot's packages and the tables file (as tables.toml) in a stable order."""

import sys
import zipfile
from pathlib import Path

deps_dir, tables_file = Path(sys.argv[1]), Path(sys.argv[2])
out = Path("build/lambda.zip")
tmp = out.with_suffix(".zip.tmp")
skip_dirs = {"__pycache__", "tests"}


def files(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not skip_dirs.intersection(path.relative_to(root).parts[:-1]):
            if path.suffix != ".pyc" and path.name != ".complete":
                found.append(path)
    return found


count = 0
with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
    for path in files(deps_dir):
        zf.write(path, path.relative_to(deps_dir).as_posix())
        count += 1
    for package in ("bot", "handlers"):
        for path in files(Path(package)):
            zf.write(path, path.as_posix())
            count += 1
    zf.write(tables_file, "tables.toml")  # TABLEBOT_CONFIG=/var/task/tables.toml
    count += 1
tmp.replace(out)
print(f"build-lambda: {out}: {count} files, {out.stat().st_size / 1e6:.1f} MB")
PY
