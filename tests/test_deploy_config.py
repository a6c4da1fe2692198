"""serverless.yml, its resources and the Slack app manifest against the code they deploy.

The IAM policies are checked against the AWS calls the code makes (read from the source), so a
new boto3 call without its permission, or a permission no code needs, fails here rather than in
production. `scripts/check-deploy.sh` is the slow, complete check (osls package + cfn-lint).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.poller import PollerSettings
from bot.settings import POLL_FUNCTION, SLACK_FUNCTION, secret_names
from bot.sources import DEFAULT_MAX_BYTES, S3Prefix, parse_s3_allow_list
from bot.staging.layout import DEFAULT_RETENTION, UPLOADS_PREFIX
from bot.store.dynamodb import TABLE_DEFINITION_PATH

ROOT = Path(__file__).resolve().parents[1]


class CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (`!Ref`, `!GetAtt`, `!Sub`...) as their long forms."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _cfn_tag)


def load_yaml(name: str) -> Any:
    return yaml.load((ROOT / name).read_text(), Loader=CloudFormationLoader)  # a SafeLoader subclass


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    return load_yaml("serverless.yml")


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    """Every resource defined in resources/*.yml, by logical id."""
    found: dict[str, Any] = {}
    for path in sorted((ROOT / "resources").glob("*.yml")):
        for logical_id, resource in (load_yaml(f"resources/{path.name}").get("Resources") or {}).items():
            assert logical_id not in found, f"{logical_id} is defined twice"
            found[logical_id] = resource
    return found


def role_statements(resources: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [s for policy in resources[role]["Properties"]["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def granted(statements: list[dict[str, Any]], service_prefix: str) -> set[str]:
    return {
        action
        for s in statements
        if s["Effect"] == "Allow"
        for action in as_list(s["Action"])
        if action.startswith(service_prefix + ":")
    }


def resources_of(statements: list[dict[str, Any]], action: str) -> list[Any]:
    return [r for s in statements if action in as_list(s["Action"]) for r in as_list(s["Resource"])]


# The boto3 operations the code calls, and the IAM action each one is authorized as.
S3_ACTIONS = {
    "put_object": "s3:PutObject",
    "create_multipart_upload": "s3:PutObject",
    "upload_part": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "abort_multipart_upload": "s3:AbortMultipartUpload",
    "get_object": "s3:GetObject",
    "head_object": "s3:GetObject",
    "delete_object": "s3:DeleteObject",
    "delete_objects": "s3:DeleteObject",
    "list_objects_v2": "s3:ListBucket",
}
DYNAMODB_ACTIONS = {
    "get_item": "dynamodb:GetItem",
    "put_item": "dynamodb:PutItem",
    "update_item": "dynamodb:UpdateItem",
    "query": "dynamodb:Query",
    "delete_item": "dynamodb:DeleteItem",
    # TransactWriteItems is authorized as the item actions it holds (below).
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}


def calls_in(path: str, patterns: list[str]) -> set[str]:
    source = (ROOT / path).read_text()
    return {name for pattern in patterns for name in re.findall(pattern, source)}


def needed(calls: set[str], mapping: dict[str, str], where: str) -> set[str]:
    unknown = calls - mapping.keys() - {"transact_write_items", "get_paginator"}
    assert not unknown, f"{where} calls {sorted(unknown)}: add their IAM action here and to resources/iam.yml"
    return {mapping[c] for c in calls if c in mapping}


def staging_s3_actions() -> set[str]:
    calls = calls_in("bot/staging/s3.py", [r"_client\.([a-z0-9_]+)\(", r'get_paginator\("([a-z0-9_]+)"\)'])
    return needed(calls, S3_ACTIONS, "bot/staging/s3.py")


def store_dynamodb_actions() -> set[str]:
    calls = calls_in(
        "bot/store/dynamodb.py", [r'_call\(\s*"([a-z_]+)"', r'\{\s*"(Put|Update|Delete|ConditionCheck)"\s*:']
    )
    return needed(calls, DYNAMODB_ACTIONS, "bot/store/dynamodb.py")


def test_the_calls_are_found_in_the_code() -> None:
    # Guards the readers above: if the code were restructured so that they find nothing, every
    # comparison below would pass vacuously.
    assert {"s3:PutObject", "s3:GetObject", "s3:ListBucket"} <= staging_s3_actions()
    assert {"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"} <= store_dynamodb_actions()


def test_no_wildcard_actions_or_resources_in_any_allow(resources: dict[str, Any]) -> None:
    for role in ("SlackRole", "PollerRole"):
        for statement in role_statements(resources, role):
            if statement["Effect"] == "Deny":
                continue  # a Deny narrows what an Allow grants
            assert statement["Effect"] == "Allow"
            for action in as_list(statement["Action"]):
                assert "*" not in action, f"{role} {statement['Sid']}: wildcard action {action}"
            for resource in as_list(statement["Resource"]):
                assert resource != "*", f"{role} {statement['Sid']}: Resource '*'"
                text = json.dumps(resource)
                assert ":::*" not in text and ":*:" not in text, f"{role} {statement['Sid']}: {text} is too wide"


def test_each_role_may_call_the_job_store_exactly_as_the_code_does(resources: dict[str, Any]) -> None:
    wanted = store_dynamodb_actions()
    for role in ("SlackRole", "PollerRole"):
        statements = role_statements(resources, role)
        assert granted(statements, "dynamodb") == wanted, role
        for action in wanted:
            for resource in resources_of(statements, action):
                # the table itself, or its indexes for Query
                assert "JobsTable" in json.dumps(resource), f"{role}: {action} on {resource}"
        index_resources = [json.dumps(r) for r in resources_of(statements, "dynamodb:Query")]
        assert any("/index/" in r for r in index_resources), f"{role}: Query must reach the due/by_table indexes"


def test_staging_permissions_follow_the_staging_code(resources: dict[str, Any], service: dict[str, Any]) -> None:
    assert service["provider"]["environment"]["TABLEBOT_STAGING_PREFIX"] == "${self:custom.stagingPrefix}"
    assert service["custom"]["stagingPrefix"].endswith("/")
    slack = role_statements(resources, "SlackRole")
    # The Slack function stages, reads, deletes and lists: every action bot/staging/s3.py needs.
    assert granted(slack, "s3") == staging_s3_actions()
    for action in staging_s3_actions() - {"s3:ListBucket"}:
        for resource in resources_of(slack, action):
            assert resource == {"Fn::Sub": "${StagingBucket.Arn}/${self:custom.stagingPrefix}*"}, (action, resource)
    # The poller only reads the file it sends (and needs ListBucket for a 404 on an expired one).
    poller = role_statements(resources, "PollerRole")
    assert granted(poller, "s3") == {"s3:GetObject", "s3:ListBucket"}
    for statements in (slack, poller):
        assert resources_of(statements, "s3:ListBucket") == [{"Fn::GetAtt": ["StagingBucket", "Arn"]}]


def test_only_the_slack_function_may_invoke_and_only_itself(resources: dict[str, Any], service: dict[str, Any]) -> None:
    assert granted(role_statements(resources, "PollerRole"), "lambda") == set()
    slack = role_statements(resources, "SlackRole")
    assert granted(slack, "lambda") == {"lambda:InvokeFunction"}
    (target,) = resources_of(slack, "lambda:InvokeFunction")
    # The name Serverless gives the function: <service>-<stage>-<function key>.
    assert target["Fn::Sub"].endswith(":function:${self:service}-${sls:stage}-slack")
    assert service["functions"]["slack"]["role"] == "SlackRole"


def test_secrets_are_read_at_run_time_under_the_stage_path_only(
    resources: dict[str, Any], service: dict[str, Any]
) -> None:
    env = service["provider"]["environment"]
    assert env["TABLEBOT_SSM_PATH"] == "${self:custom.ssmPath}"
    assert service["custom"]["ssmPath"] == "/tablebot/${sls:stage}/"
    text = (ROOT / "serverless.yml").read_text()
    assert "${ssm:" not in text, "deploy-time SSM resolution fails offline and puts secrets in the template"
    for role in ("SlackRole", "PollerRole"):
        statements = role_statements(resources, role)
        # By name only (bot/secrets.py reads an allow-list), never the whole path.
        assert granted(statements, "ssm") == {"ssm:GetParameters"}
        allowed = [s for s in statements if s["Effect"] == "Allow"]
        for resource in resources_of(allowed, "ssm:GetParameters"):
            assert re.search(r":parameter/tablebot/\$\{sls:stage\}/\*$", resource["Fn::Sub"]), resource
    # Each function reads only its own secrets: the poller is denied the Slack signing secret.
    denied = [
        r["Fn::Sub"].rsplit("/", 1)[-1]
        for s in role_statements(resources, "PollerRole")
        if s["Effect"] == "Deny"
        for r in as_list(s["Resource"])
    ]
    poll_secrets = set(secret_names(POLL_FUNCTION))
    assert "SLACK_SIGNING_SECRET" in denied and not poll_secrets & set(denied)
    assert "SLACK_SIGNING_SECRET" in secret_names(SLACK_FUNCTION)


def test_every_environment_variable_set_is_one_the_code_reads(service: dict[str, Any]) -> None:
    names = set(service["provider"]["environment"])
    for function in service["functions"].values():
        names |= set(function.get("environment", {}))
    source = "\n".join(p.read_text() for p in (ROOT / "bot").rglob("*.py"))
    unread = {n for n in names - {"TABLEBOT_SSM_PATH", "POWERTOOLS_SERVICE_NAME"} if f'"{n}"' not in source}
    assert not unread, f"serverless.yml sets variables no code reads: {sorted(unread)}"
    assert service["provider"]["environment"]["TABLEBOT_JOBS_TABLE"] == {"Ref": "JobsTable"}
    assert service["provider"]["environment"]["TABLEBOT_STAGING_BUCKET"] == {"Ref": "StagingBucket"}


def test_the_table_is_the_stores_own_definition(resources: dict[str, Any], service: dict[str, Any]) -> None:
    table = resources["JobsTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert table["Properties"] == "${file(resources/dynamodb-table.json)}"
    assert (ROOT / "resources/dynamodb-table.json").resolve() == TABLE_DEFINITION_PATH
    # serverless.yml adds the name and nothing else to those properties.
    overlays = [r["Resources"]["JobsTable"] for r in service["resources"] if isinstance(r, dict) and "Resources" in r]
    assert overlays == [{"Properties": {"TableName": "${self:service}-${sls:stage}-jobs"}}]


def test_the_staging_bucket_is_private_encrypted_and_expires_uploads(
    resources: dict[str, Any], service: dict[str, Any]
) -> None:
    bucket = resources["StagingBucket"]["Properties"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    (encryption,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    expire = rules["expire-staged-uploads"]
    custom = service["custom"]
    assert expire["Prefix"] == "${self:custom.stagingPrefix}" + UPLOADS_PREFIX
    assert custom["stagingRetentionDays"] == DEFAULT_RETENTION.days
    assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    (deny,) = resources["StagingBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_functions_are_sized_for_the_work(service: dict[str, Any]) -> None:
    functions = service["functions"]
    for name, function in functions.items():
        module = ROOT / (function["handler"].rsplit(".", 1)[0] + ".py")
        assert module.is_file(), f"{name}: {function['handler']} names a missing module"
        assert re.search(r"^def handler\(event", module.read_text(), re.MULTILINE), (
            f"{module} has no handler(event, context)"
        )
        assert function["destinations"]["onFailure"]["arn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    poll, slack = functions["poll"], functions["slack"]
    assert poll["events"] == [{"schedule": {"rate": "rate(1 minute)", "description": "tablebot poller, every minute"}}]
    settings = PollerSettings()
    # handlers/poll_jobs.py keeps 10 s before the timeout; the last upload needs time after the run.
    assert poll["timeout"] >= settings.run_seconds + 10 + 60
    # Every worker may copy a staged file of the largest size to /tmp.
    assert poll["ephemeralStorageSize"] * 1024 * 1024 >= settings.workers * DEFAULT_MAX_BYTES
    assert slack["timeout"] == 900
    # A retried lazy listener would fail Bolt's 5-minute signature check: failures go to the DLQ.
    assert slack["maximumRetryAttempts"] == 0
    assert slack["maximumEventAge"] <= 300
    assert slack["ephemeralStorageSize"] * 1024 * 1024 >= 2 * DEFAULT_MAX_BYTES
    assert slack["events"] == [{"httpApi": {"method": "POST", "path": "/slack/events"}}]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (bash scripts/setup.sh)")
def test_source_prefixes_give_the_same_allow_list_to_the_bot_and_to_iam() -> None:
    script = "const {build} = require('./resources/source-prefixes.js'); console.log(JSON.stringify(build(process.argv[1])));"

    def build(raw: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["node", "-e", script, raw], cwd=ROOT, capture_output=True, text=True, timeout=30)

    empty = json.loads(build("").stdout)
    assert empty == {"allowList": "", "resources": {"Resources": {}}}

    answer = build(" s3://ops-tables/tablebot/uploads/ ,exports.example/")
    assert answer.returncode == 0, answer.stderr
    built = json.loads(answer.stdout)
    allowed = parse_s3_allow_list(built["allowList"].split(","))
    assert allowed == (S3Prefix("ops-tables", "tablebot/uploads/"), S3Prefix("exports.example", ""))
    policy = built["resources"]["Resources"]["SlackSourceReadPolicy"]["Properties"]
    assert policy["RoleName"] == {"Ref": "SlackRole"}
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "s3:GetObject"
    arns = [r["Fn::Sub"] for r in statement["Resource"]]
    assert arns == [f"arn:${{AWS::Partition}}:s3:::{p.bucket}/{p.prefix}*" for p in allowed]

    # An entry that is not bucket/folder/ would widen the policy to other buckets or folders.
    for wrong in ("ops", "ops-tables/uploads", "ops-tables/*", "s3://Ops/x/"):
        refused = build(wrong)
        assert refused.returncode != 0, wrong
        assert "must look like bucket/folder/" in refused.stderr


def test_the_slack_manifest_matches_the_app(service: dict[str, Any]) -> None:
    from bot.slack.app import BOT_EVENTS, SlackDeps

    manifest = load_yaml("slack-app-manifest.yml")
    (command,) = manifest["features"]["slash_commands"]
    default_command = {f.name: f.default for f in dataclasses.fields(SlackDeps)}["command"]
    assert command["command"] == default_command
    assert command["usage_hint"]
    path = service["functions"]["slack"]["events"][0]["httpApi"]["path"]
    settings = manifest["settings"]
    for url in (
        command["url"],
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
    ):
        assert url.startswith("https://") and url.endswith(path)
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is False
    # The events the app's listeners answer, and nothing else (a shared file comes as a message
    # event: file_shared is neither subscribed nor listened to).
    assert set(settings["event_subscriptions"]["bot_events"]) == set(BOT_EVENTS)
    assert "file_shared" not in BOT_EVENTS
    # The scopes are exactly those of the Web API methods the bot calls, plus the slash command's.
    calls: set[str] = set()
    for path in [*(ROOT / "bot/slack").glob("*.py"), ROOT / "bot/intake.py", ROOT / "bot/preview.py"]:
        if path.exists():
            calls |= set(
                re.findall(
                    r"client\.((?:chat|files|conversations|usergroups|users|reactions)_[A-Za-z0-9_]+)\(",
                    path.read_text(),
                )
            )
    unknown = calls - SLACK_SCOPES.keys()
    assert not unknown, f"the bot calls {sorted(unknown)}: add their scopes here and to slack-app-manifest.yml"
    assert {"chat_postMessage", "files_info"} <= calls  # the reader above still finds the calls
    wanted = {"commands"} | {scope for call in calls for scope in SLACK_SCOPES[call]}
    wanted |= {scope for event in BOT_EVENTS for scope in EVENT_SCOPES[event]}
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == wanted


# The bot token scopes each Events API subscription needs (https://api.slack.com/events).
EVENT_SCOPES = {
    "app_mention": {"app_mentions:read"},
    "message.channels": {"channels:history"},
    "message.groups": {"groups:history"},
    "message.im": {"im:history"},
}

# The bot token scopes each Web API method needs (https://api.slack.com/methods).
SLACK_SCOPES = {
    "chat_postMessage": {"chat:write"},
    "chat_postEphemeral": {"chat:write"},
    "chat_update": {"chat:write"},
    "chat_delete": {"chat:write"},
    "chat_getPermalink": set(),  # no scope needed
    "files_info": {"files:read"},
    "files_upload_v2": {"files:write"},
    # message events and thread reads in public and private channels
    "conversations_history": {"channels:history", "groups:history"},
    "conversations_replies": {"channels:history", "groups:history"},
    "usergroups_users_list": {"usergroups:read"},
    "users_info": {"users:read"},
    "reactions_add": {"reactions:write"},
}


def test_functions_have_concurrency_limits_and_the_api_a_rate_limit(service: dict[str, Any]) -> None:
    params = service["params"]["default"]
    functions = service["functions"]
    assert functions["slack"]["reservedConcurrency"] == "${param:slackConcurrency}"
    assert functions["poll"]["reservedConcurrency"] == "${param:pollConcurrency}"
    # Runs start every minute and may last the whole timeout: the limit must not throttle them.
    assert params["pollConcurrency"] >= -(-functions["poll"]["timeout"] // 60)
    assert params["slackConcurrency"] >= 10
    stage = next(r for r in service["resources"] if "extensions" in r)["extensions"]["HttpApiStage"]
    assert stage["Properties"]["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": "${param:apiRateLimit}",
        "ThrottlingBurstLimit": "${param:apiBurstLimit}",
    }
    # The HTTP API's access log: no header or body (the signature, the payload) in its format.
    access_log = json.loads(service["custom"]["accessLogFormat"])
    assert service["provider"]["logs"]["httpApi"]["format"] == "${self:custom.accessLogFormat}"
    assert {"requestId", "ip", "status", "routeKey"} <= access_log.keys()
    assert not any("header" in v.lower() or "body" in v.lower() for v in access_log.values())


def test_staged_files_are_versioned_for_a_while_and_the_queue_is_encrypted(resources: dict[str, Any]) -> None:
    bucket = resources["StagingBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    # Versioning without these would keep every deleted staged file for ever.
    assert rules["remove-noncurrent-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"]
    assert rules["remove-expired-delete-markers"]["ExpiredObjectDeleteMarker"] is True
    queue = resources["DeadLetterQueue"]["Properties"]
    assert queue["KmsMasterKeyId"] == "${file(resources/kms-key.js):queueKey}"
    assert "SqsManagedSseEnabled" not in queue  # the two are exclusive


def _checkov_skips(node: Any, where: str, found: list[tuple[str, str, str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "checkov" and isinstance(value, dict) and "skip" in value:
                skips = value["skip"]
                if isinstance(skips, str):  # ${self:custom.X}: the list is under custom
                    continue
                found.extend((where, s["id"], s.get("comment", "")) for s in skips)
            else:
                _checkov_skips(value, f"{where}/{key}", found)
    elif isinstance(node, list):
        for item in node:
            _checkov_skips(item, where, found)


def test_every_checkov_skip_has_a_one_line_reason_and_is_in_the_security_doc(
    service: dict[str, Any], resources: dict[str, Any]
) -> None:
    found: list[tuple[str, str, str]] = []
    _checkov_skips(service["resources"], "serverless.yml", found)
    _checkov_skips(resources, "resources", found)
    for name, skips in service["custom"].items():
        if name.endswith("Skips"):
            found.extend((f"custom.{name}", s["id"], s.get("comment", "")) for s in skips)
    assert len(found) >= 7
    security = (ROOT / "docs/security.md").read_text()
    for where, check_id, reason in found:
        assert re.fullmatch(r"CKV2?_AWS_\d+", check_id), (where, check_id)
        assert reason and "\n" not in reason.strip() and len(reason) < 300, f"{where} {check_id}: one line, please"
        assert check_id in security, f"{check_id} ({where}) is skipped but not listed in docs/security.md"
    # Every extension and skip list is used by the template.
    text = (ROOT / "serverless.yml").read_text()
    for name in service["custom"]:
        if name.endswith("Skips"):
            assert f"${{self:custom.{name}}}" in text


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (bash scripts/setup.sh)")
def test_a_kms_key_encrypts_every_store_and_only_through_the_bots_services() -> None:
    script = "const {build} = require('./resources/kms-key.js'); console.log(JSON.stringify(build(process.argv[1])));"

    def build(raw: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["node", "-e", script, raw], cwd=ROOT, capture_output=True, text=True, timeout=30)

    none = json.loads(build("").stdout)
    assert none == {"arn": "", "queueKey": "alias/aws/sqs", "resources": {"Resources": {}, "extensions": {}}}

    arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    answer = build(f" {arn} ")
    assert answer.returncode == 0, answer.stderr
    built = json.loads(answer.stdout)
    assert built["queueKey"] == arn
    extensions = built["resources"]["extensions"]
    assert set(extensions) == {"SlackLogGroup", "PollLogGroup", "HttpApiLogGroup"}
    assert all(e == {"Properties": {"KmsKeyId": arn}} for e in extensions.values())
    overlays = built["resources"]["Resources"]
    assert overlays["JobsTable"]["Properties"]["SSESpecification"]["KMSMasterKeyId"] == arn
    (sse,) = overlays["StagingBucket"]["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": arn}
    policy = overlays["KmsKeyUsePolicy"]["Properties"]
    assert policy["Roles"] == [{"Ref": "SlackRole"}, {"Ref": "PollerRole"}]
    for statement in policy["PolicyDocument"]["Statement"]:
        assert statement["Resource"] == arn
        assert "kms:ViaService" in statement["Condition"]["StringEquals"]
        assert all("*" not in action for action in as_list(statement["Action"]))

    for wrong in ("alias/tablebot", "arn:aws:kms:eu-west-1:123456789012:alias/x", "*"):
        refused = build(wrong)
        assert refused.returncode != 0, wrong
        assert "must be a KMS key ARN" in refused.stderr
