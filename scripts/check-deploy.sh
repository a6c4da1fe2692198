#!/usr/bin/env bash
# Checks the deployment offline: builds the Lambda package from the lock file, checks that it
# holds no development server and fits Lambda's 250 MB, builds it a second time from scratch
# and compares the two (same files, contents and versions), packages serverless.yml with
# `osls package` (no AWS credentials, no network: dummy credentials below) three ways, and for
# each template checks that every function's handler module is in the package, lints it with
# cfn-lint and scans it with checkov, which must find nothing that is neither fixed nor skipped
# with a reason (docs/security.md). Exits non-zero on any error. Run `bash scripts/setup.sh` first.
#
#   bash scripts/check-deploy.sh
#
# checkov and cfn-lint live in their own virtualenv, .venv/deploy-check, installed here from
# requirements/deploy-check.txt (exact versions and hashes; a few seconds with uv).
# TABLES_FILE (default examples/tables.toml) is the tables file packaged for the check.
# LAMBDA_PYTHON, when set (or when `python3.12` runs), is used to import the handler modules
# from the built package, as Lambda's python3.12 runtime would.
set -euo pipefail
cd "$(dirname "$0")/.."

tables_file=${TABLES_FILE:-examples/tables.toml}
stage=ci

fail() {
  echo "check-deploy: $*" >&2
  exit 1
}

[ -x .venv/bin/python ] || fail ".venv is missing; run: bash scripts/setup.sh"
[ -x node_modules/.bin/osls ] || fail "osls is not installed (npm); run: bash scripts/setup.sh"

tools=.venv/deploy-check
tools_stamp="$tools/.stamp-$(sha256sum requirements/deploy-check.txt | cut -c1-16)"
if [ ! -f "$tools_stamp" ]; then
  echo "check-deploy: installing requirements/deploy-check.txt (checkov, cfn-lint) into $tools"
  rm -rf "$tools"
  # The Python of .venv (3.11 unless PYTHON said otherwise); uv comes from the development lock.
  .venv/bin/uv venv --quiet --python .venv/bin/python "$tools"
  .venv/bin/uv pip install --quiet --python "$tools/bin/python" --require-hashes --no-deps \
    -r requirements/deploy-check.txt
  touch "$tools_stamp"
fi

bash scripts/build-lambda.sh "$tables_file"
.venv/bin/python scripts/lambda_package.py check build/lambda.zip requirements/lambda.txt ||
  fail "build/lambda.zip is not fit to deploy"

# Two builds of one commit must ship the same thing: the second installs the lock anew.
LAMBDA_FRESH_DEPS=1 LAMBDA_ZIP=build/lambda-rebuild.zip bash scripts/build-lambda.sh "$tables_file"
.venv/bin/python scripts/lambda_package.py compare build/lambda.zip build/lambda-rebuild.zip ||
  fail "two builds of the same commit differ: the package is not reproducible"
rm -f build/lambda-rebuild.zip

# osls wants credentials to exist even for `package`, which calls no AWS API. These are fake.
export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE
export AWS_SECRET_ACCESS_KEY=not-a-real-secret
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN
export SLS_TELEMETRY_DISABLED=1 SLS_NOTIFICATIONS_MODE=off

template=.serverless/cloudformation-template-update-stack.json

check_template() {
  # Every function's handler must name a module in the package: a missing file would only
  # show at the first request after a deploy.
  .venv/bin/python - "$template" <<'PY'
import json
import sys
import zipfile

template = json.load(open(sys.argv[1]))
names = set(zipfile.ZipFile("build/lambda.zip").namelist())
missing = []
for logical_id, resource in template["Resources"].items():
    if resource["Type"] != "AWS::Lambda::Function":
        continue
    handler = resource["Properties"]["Handler"]
    module = handler.rsplit(".", 1)[0] + ".py"
    if module not in names:
        missing.append(f"{logical_id}: handler {handler} needs {module}, which is not in build/lambda.zip")
if missing:
    sys.exit("check-deploy: " + "\n  ".join(missing))
PY
  # W3005 (a DependsOn also implied by a Ref/GetAtt) is how Serverless writes its templates.
  "$tools/bin/cfn-lint" --ignore-checks W3005 -- "$template" || fail "cfn-lint found problems in $template ($1)"
  echo "check-deploy: $1: template valid (cfn-lint clean)"
  # --skip-download: offline, no platform account (checkov would fetch guidelines otherwise).
  local report
  report=$(mktemp)
  "$tools/bin/checkov" --file "$template" --framework cloudformation --skip-download --output json >"$report" 2>/dev/null || true
  # The skips and their reasons are listed once, for the first template.
  .venv/bin/python scripts/checkov_summary.py "$report" "$1" ${2:-} || {
    rm -f "$report"
    fail "checkov: $1: findings neither fixed nor skipped with a reason"
  }
  rm -f "$report"
}

# 1. As a first deploy would be: no source buckets.
node_modules/.bin/osls package --stage "$stage" || fail "osls package failed"
check_template "default settings"

# 2. With source prefixes, so the generated source-read policy is packaged and linted too.
node_modules/.bin/osls package --stage "$stage" \
  --param="sourcePrefixes=example-ops-tables/tablebot/uploads/,s3://example-exports/" || fail "osls package (sources) failed"
check_template "with sourcePrefixes" --brief

# 3. With a customer-managed KMS key (resources/kms-key.js): the key on every store, its policy.
node_modules/.bin/osls package --stage "$stage" \
  --param="kmsKeyArn=arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab" || fail "osls package (kmsKeyArn) failed"
check_template "with kmsKeyArn" --brief

# 4. Import the handlers the way Lambda does, when a Python 3.12 is at hand.
lambda_python=${LAMBDA_PYTHON:-python3.12}
# pyenv keeps other Pythons off PATH: look there too before giving up.
is_312() { "$1" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; }
if ! is_312 "$lambda_python" && command -v pyenv >/dev/null 2>&1; then
  found=$(ls "$(pyenv root)"/versions/3.12*/bin/python3.12 2>/dev/null | tail -n 1 || true)
  [ -n "$found" ] && lambda_python=$found
fi
if "$lambda_python" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
  unpacked=$(mktemp -d)
  trap 'rm -rf "$unpacked"' EXIT
  .venv/bin/python -c 'import sys, zipfile; zipfile.ZipFile("build/lambda.zip").extractall(sys.argv[1])' "$unpacked"
  (
    cd "$unpacked"
    # Nothing may be reached at import time: point Slack at a closed port, give no real secret.
    env -i PATH="$PATH" HOME="$unpacked" TABLEBOT_CONFIG="$unpacked/tables.toml" \
      SLACK_SIGNING_SECRET=check-deploy SLACK_BOT_TOKEN=xoxb-check-deploy SLACK_API_BASE_URL=http://127.0.0.1:9/api/ \
      AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=not-a-real-secret \
      "$lambda_python" -I -c '
import importlib, pathlib, sys
sys.path.insert(0, ".")
for path in sorted(pathlib.Path("handlers").glob("*.py")):
    if path.stem == "__init__":
        continue
    module = importlib.import_module(f"handlers.{path.stem}")
    if not callable(getattr(module, "handler", None)):
        sys.exit(f"check-deploy: handlers/{path.name} has no handler(event, context)")
    print(f"check-deploy: handlers.{path.stem} imports on Python {sys.version.split()[0]}")
'
  ) || fail "the handlers do not import from build/lambda.zip on Python 3.12"
else
  echo "check-deploy: no Python 3.12 found (set LAMBDA_PYTHON): skipped importing the handlers from the package"
fi
echo "check-deploy: ok"
