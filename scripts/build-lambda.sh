#!/usr/bin/env bash
# Builds build/lambda.zip, the one code package of both Lambda functions (serverless.yml
# `package.artifact`): the bot's code (bot/, handlers/; never devtools/), its Python dependencies
# at the exact versions and hashes of requirements/lambda.txt as manylinux x86_64 wheels for
# CPython 3.12 (the Lambda runtime, whatever Python runs this script), and the tables file.
#
#   bash scripts/build-lambda.sh [TABLES_FILE]     (default: tables.toml, or $TABLEBOT_TABLES_FILE)
#
# Reproducible: the same commit and tables file give the same files, versions and zip bytes
# (scripts/check-deploy.sh builds twice and compares). To change a version: scripts/lock.sh.
# No Docker: pip picks binary wheels for the Lambda platform (--platform/--python-version), so it
# works the same on a laptop and in CI. The dependencies are installed once per lock file
# (build/lambda-deps-<hash>/) and reused; the bot's code is copied every time.
# LAMBDA_ZIP (default build/lambda.zip) names the output; LAMBDA_FRESH_DEPS=1 installs the
# dependencies anew into a temporary folder instead of reusing the cached ones.
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

lock=requirements/lambda.txt
out=${LAMBDA_ZIP:-build/lambda.zip}
mkdir -p build "$(dirname "$out")"
# Lambda python3.12 runs on Amazon Linux 2023 (glibc 2.34): any manylinux wheel up to 2_34 fits.
pip_platform=(--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64)
install_deps() {
  # --require-hashes: every file is the one the lock names; --no-deps: nothing outside the lock.
  "$python" -m pip install -q --disable-pip-version-check --no-compile --require-hashes --no-deps \
    --target "$1" "${pip_platform[@]}" --implementation cp --python-version 3.12 \
    --only-binary=:all: -r "$lock"
}
if [ "${LAMBDA_FRESH_DEPS:-0}" = 1 ]; then
  deps_dir=$(mktemp -d)
  trap 'rm -rf "$deps_dir"' EXIT
  echo "build-lambda: installing $lock anew for CPython 3.12 manylinux x86_64 into $deps_dir"
  install_deps "$deps_dir"
else
  deps_hash=$( (cat "$lock"; echo "${pip_platform[*]} cp312") | sha256sum | cut -c1-16)
  deps_dir="build/lambda-deps-$deps_hash"
  if [ ! -f "$deps_dir/.complete" ]; then
    echo "build-lambda: installing $lock for CPython 3.12 manylinux x86_64 into $deps_dir"
    rm -rf build/lambda-deps-*
    install_deps "$deps_dir"
    touch "$deps_dir/.complete"
  fi
fi

# Zips it in a fixed order with fixed time stamps, refuses development files, prints the
# package's size and fails above Lambda's 250 MB unzipped.
"$python" scripts/lambda_package.py zip "$deps_dir" "$tables_file" "$out"
