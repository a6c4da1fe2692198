#!/usr/bin/env bash
# Writes the lock files: exact versions and sha256 hashes of every Python package the project
# installs, resolved by uv (pinned in the development lock itself).
#
#   bash scripts/lock.sh                          after changing a dependency in pyproject.toml or
#                                                 requirements/*.in: adds what is new, keeps every
#                                                 other version as it is
#   bash scripts/lock.sh --upgrade                everything to the newest versions the ranges allow
#   bash scripts/lock.sh --upgrade-package numpy  one package (repeat the option for more)
#
# Then `make setup` installs the new development lock and `bash scripts/check-deploy.sh` builds
# and checks the Lambda package from the new Lambda lock; commit requirements/*.txt.
#
#   requirements/dev.txt           the development environment (scripts/setup.sh): pyproject.toml's
#                                  dependencies, its `dev` extra and requirements/dev.in; one
#                                  resolution for every platform and Python >= 3.11, with the
#                                  fewest versions of each package (so one numpy for 3.11 and 3.12)
#   requirements/lambda.txt        the Lambda package (scripts/build-lambda.sh): pyproject.toml's
#                                  dependencies for CPython 3.12 on manylinux_2_34 x86_64 (Lambda's
#                                  python3.12 runtime, Amazon Linux 2023), at the versions of
#                                  dev.txt: the versions the tests ran are the versions shipped
#   requirements/deploy-check.txt  checkov and cfn-lint (scripts/check-deploy.sh), their own venv
set -euo pipefail
cd "$(dirname "$0")/.."

uv=.venv/bin/uv
if [ ! -x "$uv" ]; then
  # A fresh clone whose lock lags pyproject.toml (setup.sh stops then): install just the uv the
  # development lock pins, checked against its hashes.
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  pinned_uv=$(mktemp)
  trap 'rm -f "$pinned_uv"' EXIT
  awk '/^uv==/ {keep = 1; print; next} /^[A-Za-z0-9]/ {keep = 0} keep' requirements/dev.txt >"$pinned_uv"
  echo "lock: installing $(head -n 1 "$pinned_uv" | cut -d' ' -f1) into .venv"
  .venv/bin/python -m pip install -q --require-hashes --no-deps -r "$pinned_uv"
fi
compile() { "$uv" pip compile --quiet --generate-hashes --custom-compile-command "bash scripts/lock.sh" "$@"; }

compile pyproject.toml requirements/dev.in --extra dev \
  --universal --fork-strategy fewest --python-version 3.11 \
  -o requirements/dev.txt "$@"
compile pyproject.toml -c requirements/dev.txt \
  --python-version 3.12 --python-platform x86_64-manylinux_2_34 \
  -o requirements/lambda.txt "$@"
compile requirements/deploy-check.in \
  --universal --fork-strategy fewest --python-version 3.11 \
  -o requirements/deploy-check.txt "$@"

for lock in requirements/dev.txt requirements/lambda.txt requirements/deploy-check.txt; do
  echo "lock: $lock: $(grep -cE '^[A-Za-z0-9]' "$lock") packages"
done
