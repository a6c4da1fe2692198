"""The real servers the suite relies on start and answer a round trip."""

from __future__ import annotations

import uuid
from typing import Any


def test_dynamodb_local_round_trip(dynamodb_client: Any) -> None:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    dynamodb_client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb_client.put_item(
        TableName=name,
        Item={"pk": {"S": "a"}, "v": {"N": "1"}},
        ConditionExpression="attribute_not_exists(pk)",
    )
    got = dynamodb_client.get_item(TableName=name, Key={"pk": {"S": "a"}}, ConsistentRead=True)
    assert got["Item"]["v"] == {"N": "1"}
    # The conditional write the job store is built on: a second create of the same key is refused.
    try:
        dynamodb_client.put_item(
            TableName=name, Item={"pk": {"S": "a"}}, ConditionExpression="attribute_not_exists(pk)"
        )
    except dynamodb_client.exceptions.ConditionalCheckFailedException:
        pass
    else:
        raise AssertionError("conditional put on an existing key succeeded")


def test_seaweedfs_s3_round_trip(s3_client: Any) -> None:
    bucket = f"probe-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    body = b"host,service\nweb-1,checkout\n"
    s3_client.put_object(Bucket=bucket, Key="dir/table.csv", Body=body)
    assert s3_client.get_object(Bucket=bucket, Key="dir/table.csv")["Body"].read() == body
    ranged = s3_client.get_object(Bucket=bucket, Key="dir/table.csv", Range="bytes=0-3")["Body"].read()
    assert ranged == b"host"
