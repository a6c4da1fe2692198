#!/usr/bin/env bash
# Installs everything the bot, its demo and its tests need, on a fresh machine or an old one.
# Idempotent: a second run only checks. Used by `make demo`, `make test` and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# Exactly the versions of requirements/dev.txt, each checked against its hash (--require-hashes,
# --no-deps: nothing outside the lock), then the project itself, built offline by the locked
# setuptools. A changed lock or pyproject.toml installs again. To change a version: scripts/lock.sh.
# A dependency added to pyproject.toml but not yet locked would be missing from .venv and fail
# later as an ImportError: say so now.
"$PYTHON" - <<'PY'
import re
import sys
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = [*project["dependencies"], *project.get("optional-dependencies", {}).get("dev", [])]
canonical = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
locked = {canonical(m[1]) for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", open("requirements/dev.txt").read(), re.M)}
missing = [spec for spec in wanted if canonical(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0]) not in locked]
if missing:
    sys.exit(f"setup: requirements/dev.txt lacks {', '.join(missing)} (pyproject.toml names it): run bash scripts/lock.sh")
PY
stamp=".venv/.stamp-$(cat pyproject.toml requirements/dev.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages (requirements/dev.txt)"
  .venv/bin/python -m pip install -q --require-hashes --no-deps -r requirements/dev.txt
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  rm -f .venv/.stamp-* && touch "$stamp"
fi

nstamp="node_modules/.stamp-$( (cat package.json; cat package-lock.json 2>/dev/null || true) | sha256sum | cut -c1-16)"
if [ ! -f "$nstamp" ]; then
  echo "setup: installing npm packages"
  if [ -f package-lock.json ]; then npm ci --silent --no-audit --no-fund; else npm install --silent --no-audit --no-fund; fi
  rm -f node_modules/.stamp-* && touch "$nstamp"
fi
