"""The alarms operators rely on (resources/alarms.yml): each is sent to the deployer's SNS topic,
each reads a metric the code records (or AWS's own), and docs/operations.md says what each one
and each metric means."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.observability import METRIC_UNITS
from tests.test_deploy_config import load_yaml

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()


@pytest.fixture(scope="module")
def alarms() -> dict[str, Any]:
    resources: dict[str, Any] = load_yaml("resources/alarms.yml")["Resources"]
    return {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}


def test_serverless_includes_the_alarms_and_names_their_topic() -> None:
    service = load_yaml("serverless.yml")
    assert "${file(resources/alarms.yml)}" in service["resources"]
    assert service["params"]["default"]["alarmTopicName"]
    assert service["provider"]["environment"]["TABLEBOT_METRICS_NAMESPACE"] == "${self:custom.metricsNamespace}"
    topic = load_yaml("resources/alarms.yml")["Resources"]["AlarmTopic"]
    assert topic["Properties"]["TopicName"] == "${param:alarmTopicName}"


def test_every_alarm_goes_to_the_topic_and_reads_a_real_metric(alarms: dict[str, Any]) -> None:
    assert {"DeadLetterQueueAlarm", "PollerErrorsAlarm", "OldestJobWaitingAlarm", "QuarantinedRecordsAlarm"} <= set(
        alarms
    )
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        if alarm["Namespace"].startswith("AWS/"):
            continue
        assert alarm["Namespace"] == "${self:custom.metricsNamespace}", name
        assert alarm["MetricName"] in METRIC_UNITS, f"{name} reads a metric the bot never records"
        assert alarm["Dimensions"] == [{"Name": "service", "Value": "tablebot"}], name


def test_operations_guide_explains_every_alarm_and_metric(alarms: dict[str, Any]) -> None:
    for alarm in alarms.values():
        short = alarm["AlarmName"].removeprefix("${self:service}-${sls:stage}-")
        assert f"-{short}`" in OPERATIONS, f"docs/operations.md does not explain the {short} alarm"
    for metric in METRIC_UNITS:
        assert f"`{metric}`" in OPERATIONS, f"docs/operations.md does not list the metric {metric}"
