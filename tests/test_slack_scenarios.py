"""Scenarios through the Lambda handler (signed requests, lazy listeners re-invoked in-process)
against the local Slack API, the BigPanda sandbox, a real job store and folder staging."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

from bot.store import DynamoJobStore, JobStore, create_table
from devtools.slack_api import LocalSlackApi
from tests.fixtures_upstream import Upstream
from tests.slack_support import ALICE, BOB, CAROL, DAVE, OPS, RANDOM, SECRET, Front, S, build_front
from tests.store_support import dynamodb_client

HOSTS = b"host,service,owner\nweb-1,checkout,alice\nweb-2,search,bob\n"


def _texts(front: Front, thread_ts: str) -> str:
    return front.transcript(thread_ts)


def _upload_done(front: Front, bigpanda: Upstream, user: str, content: bytes, text: str = "hosts") -> str:
    message = front.share(user, "hosts.csv", content, text=text)
    job = front.job_in(message["ts"], S.QUEUED)
    assert front.poll_until_ended(job).state is S.DONE
    return str(message["ts"])


def test_a_valid_file_ends_done_in_its_thread(front: Front, bigpanda_upstream: Upstream) -> None:
    message = front.share(ALICE, "hosts.csv", b"\xef\xbb\xbf" + HOSTS.replace(b"\n", b"\r\n"), text="new hosts")
    job = front.job_in(message["ts"], S.QUEUED)
    assert job.requested_by == ALICE and job.channel_id == OPS and job.row_count == 2 and job.status_ts
    assert job.staging_key and front.staging.exists(job.staging_key)
    assert "queued for upload" in front.slack.message(OPS, job.status_ts)["text"]
    thread = _texts(front, message["ts"])
    assert "is valid: 2 rows" in thread and "No earlier version" in thread
    assert "byte order mark" in thread.lower() or "bom" in thread.lower(), "repairs are listed"

    final = front.poll_until_ended(job)
    assert final.state is S.DONE
    assert "Done" in front.slack.message(OPS, str(job.status_ts))["text"], "the status message was updated in place"
    assert "Done" in front.thread(message["ts"])[-1]["text"]
    stored = json.dumps(bigpanda_upstream.admin.table("demo"))
    assert "web-2" in stored and "\\ufeff" not in stored
    assert len(front.slack.messages(OPS)) == 1, "everything about the upload stays in its thread"


def test_an_invalid_file_gets_its_issues_and_the_full_report(front: Front, bigpanda_upstream: Upstream) -> None:
    rows = ["host,service,owner"] + ["web-1,checkout"] * 30 + ["web-2,search,bob"]
    message = front.share(ALICE, "hosts.csv", ("\n".join(rows) + "\n").encode(), text="hosts")
    job = front.job_in(message["ts"], S.INVALID)
    front.wait(lambda: front.slack.calls_to("files.completeUploadExternal"))
    thread = front.thread(message["ts"])
    transcript = _texts(front, message["ts"])
    assert "Not uploaded" in transcript and "line 2" in transcript and "column" in transcript
    report_file = thread[-1]["files"][0]
    assert report_file["name"] == "hosts-report.csv"
    report = list(csv.reader(io.StringIO(front.slack.file_content(report_file["id"]).decode())))
    assert report[0] == ["line", "column", "code", "severity", "message", "value"]
    assert sum(1 for r in report[1:] if r[2] == "field_count") == 30
    assert "Not uploaded" in front.slack.message(OPS, str(job.status_ts))["text"]
    assert bigpanda_upstream.admin.requests("/map") == [], "nothing was sent upstream"


def test_a_few_issues_stay_inline_without_a_report_file(front: Front) -> None:
    message = front.share(ALICE, "hosts.csv", b"host,service,owner\nweb-1,checkout\n", text="hosts")
    front.job_in(message["ts"], S.INVALID)
    front.wait(lambda: "line 2" in _texts(front, message["ts"]))
    front.lambdas.join()
    assert not front.slack.calls_to("files.getUploadURLExternal")


def test_the_wrong_person_or_channel_is_refused_with_the_reason(front: Front) -> None:
    by_carol = front.share(CAROL, "hosts.csv", HOSTS, text="hosts")
    front.wait(lambda: "not on the list" in _texts(front, by_carol["ts"]))
    assert f"<@{ALICE}>" in _texts(front, by_carol["ts"]) or "S0ONCALL1" in _texts(front, by_carol["ts"])

    in_random = front.share(ALICE, "hosts.csv", HOSTS, text="hosts", channel=RANDOM)
    front.wait(lambda: "cannot be uploaded from this channel" in front.transcript(in_random["ts"], RANDOM))
    assert front.jobs() == [], "no job for a refused upload"

    by_dave = front.share(DAVE, "hosts.csv", HOSTS, text="hosts")  # allowed through the on-call group
    assert front.job_in(by_dave["ts"], S.QUEUED).requested_by == DAVE


def test_s3_outside_the_allow_list_is_refused(front: Front) -> None:
    request = front.command(ALICE, "upload hosts s3://other-bucket/hosts.csv")
    front.wait(lambda: front.responses(request))
    assert "not enabled" in front.responses(request)[-1] or "only reads files under" in front.responses(request)[-1]
    assert front.jobs() == [] and front.slack.messages(OPS) == []


def test_slack_retries_make_one_job(front: Front) -> None:
    shared = front.slack.register_file("hosts.csv", HOSTS, user=ALICE, channel=OPS)
    message = front.slack.share_file(OPS, ALICE, shared["id"], text="hosts")
    event = front.signer.file_share_event(OPS, message)
    assert front.via_lambda(event)["statusCode"] == 200
    assert front.via_lambda(front.signer.retry(event, 1))["statusCode"] == 200
    assert front.via_lambda(front.signer.retry(event, 2, "timeout"))["statusCode"] == 200
    front.job_in(message["ts"], S.QUEUED)
    front.lambdas.join()
    assert len(front.jobs()) == 1
    statuses = [m for m in front.thread(message["ts"]) if "Cancel" in json.dumps(m.get("blocks", []))]
    assert len(statuses) == 1, "one status message"


def test_bad_or_old_signatures_are_refused(front: Front) -> None:
    good = front.signer.slash_command("/table", "help", user_id=ALICE, channel_id=OPS)
    assert front.via_lambda(good)["statusCode"] == 200
    forged = front.signer.slash_command("/table", "help", user_id=ALICE, channel_id=OPS)
    forged.headers["X-Slack-Signature"] = "v0=" + "0" * 64
    assert front.via_lambda(forged)["statusCode"] == 401
    other = front.slack.signer("not-the-secret").slash_command("/table", "help", user_id=ALICE, channel_id=OPS)
    assert front.via_lambda(other)["statusCode"] == 401
    stale = front.signer.slash_command(
        "/table", "help", user_id=ALICE, channel_id=OPS, timestamp=int(time.time()) - 600
    )
    assert front.via_lambda(stale)["statusCode"] == 401
    assert SECRET not in json.dumps(front.via_lambda(forged))


def test_approval_is_refused_to_the_requester_and_given_by_an_approver(front: Front) -> None:
    message = front.share(ALICE, "gated.csv", HOSTS, text="please load gated")
    job = front.job_in(message["ts"], S.AWAITING_APPROVAL)
    asking = front.message_with(message["ts"], "approve_job")
    assert "S0LEADS01" in json.dumps(asking["blocks"])

    front.click(asking, "approve_job", ALICE)
    front.wait(lambda: any("own upload" in t for t in front.ephemerals(ALICE)))
    front.click(asking, "approve_job", CAROL)
    front.wait(lambda: any("not an approver" in t for t in front.ephemerals(CAROL)))
    assert front.store.get_job(job.job_id).state is S.AWAITING_APPROVAL

    front.click(asking, "approve_job", BOB)
    queued = front.job_in(message["ts"], S.QUEUED)
    assert queued.approver == BOB
    front.wait(lambda: "Approved by" in front.slack.message(OPS, asking["ts"])["text"])
    assert front.poll_until_ended(queued).state is S.DONE
    history = [(h.actor, h.to_state) for h in front.store.history_for_job(job.job_id)]
    assert (BOB, S.QUEUED) in history


def test_reject_ends_the_upload(front: Front, bigpanda_upstream: Upstream) -> None:
    message = front.share(ALICE, "gated.csv", HOSTS, text="gated")
    job = front.job_in(message["ts"], S.AWAITING_APPROVAL)
    front.click(front.message_with(message["ts"], "reject_job"), "reject_job", BOB)
    front.job_in(message["ts"], S.CANCELLED)
    front.wait(lambda: "Rejected" in front.slack.message(OPS, str(job.status_ts))["text"])
    assert bigpanda_upstream.admin.requests("/map") == []


def test_cancel_before_the_upload_and_not_by_strangers(front: Front, bigpanda_upstream: Upstream) -> None:
    message = front.share(ALICE, "hosts.csv", HOSTS, text="hosts")
    job = front.job_in(message["ts"], S.QUEUED)
    status = front.slack.message(OPS, str(job.status_ts))
    front.click(status, "cancel_job", CAROL)
    front.wait(lambda: front.ephemerals(CAROL))
    assert front.store.get_job(job.job_id).state is S.QUEUED
    front.click(status, "cancel_job", ALICE)
    front.job_in(message["ts"], S.CANCELLED)
    front.wait(lambda: "Cancelled by" in _texts(front, message["ts"]))
    front.poll_until_ended(job, timeout=3)
    assert bigpanda_upstream.admin.requests("/map") == []
    front.click(status, "cancel_job", ALICE)
    front.wait(lambda: any("already cancelled" in t for t in front.ephemerals(ALICE)))


def test_retry_of_a_failed_upload_sends_the_same_file(front: Front, bigpanda_upstream: Upstream) -> None:
    bigpanda_upstream.admin.fault("job_failed")
    message = front.share(ALICE, "hosts.csv", HOSTS, text="hosts")
    job = front.job_in(message["ts"], S.QUEUED)
    assert front.poll_until_ended(job).state is S.FAILED
    failed_post = front.message_with(message["ts"], "retry_job")
    front.click(failed_post, "retry_job", CAROL)
    front.wait(lambda: front.ephemerals(CAROL))
    assert front.store.get_job(job.job_id).state is S.FAILED
    front.click(failed_post, "retry_job", ALICE)
    queued = front.job_in(message["ts"], S.QUEUED)
    assert front.poll_until_ended(queued).state is S.DONE
    assert len(bigpanda_upstream.admin.requests("/map")) == 2


def test_many_removed_rows_wait_for_a_confirmation(front: Front, bigpanda_upstream: Upstream) -> None:
    first = b"host,service,owner\n" + b"".join(b"web-%d,svc,team\n" % i for i in range(10))
    _upload_done(front, bigpanda_upstream, ALICE, first)
    # 3 of 10 rows removed (30% > 20%), one changed, one added.
    second = (
        b"host,service,owner\n"
        + b"".join(b"web-%d,svc,team\n" % i for i in range(3, 10)).replace(b"web-9,svc,team", b"web-9,svc,other")
        + b"web-99,svc,team\n"
    )
    message = front.share(ALICE, "hosts.csv", second, text="hosts")
    job = front.job_in(message["ts"], S.AWAITING_APPROVAL)
    confirm = front.message_with(message["ts"], "confirm_job")
    shown = _texts(front, message["ts"])
    assert "1 added" in shown and "3 removed" in shown and "1 changed" in shown and "30%" in shown
    assert "web-0" in shown and "web-99" in shown, "examples of removed and added rows"
    front.click(confirm, "confirm_job", ALICE)
    queued = front.job_in(message["ts"], S.QUEUED)
    assert queued.confirmed_by == ALICE and queued.approver is None, "a confirmation is not an approval"
    assert front.poll_until_ended(job).state is S.DONE

    # A small change goes straight through, with its preview in the thread.
    third = second.replace(b"web-99,svc,team\n", b"web-99,svc,team\nweb-100,svc,team\n")
    message = front.share(ALICE, "hosts.csv", third, text="hosts")
    front.job_in(message["ts"], S.QUEUED)
    assert "1 added" in _texts(front, message["ts"]) and "0 removed" in _texts(front, message["ts"])


def test_a_file_without_a_table_name_gets_a_menu(front: Front) -> None:
    message = front.share(ALICE, "export.csv", HOSTS, text="here you go")
    menu = front.wait(
        lambda: next((m for m in front.thread(message["ts"]) if "which table" in m.get("text", "")), None)
    )
    assert front.jobs() == []
    block = menu["blocks"][0]
    options = [o["value"] for o in block["accessory"]["options"]]
    assert options == ["hosts", "contacts", "gated"]
    request = front.signer.block_actions(
        user_id=ALICE,
        channel_id=OPS,
        message=menu,
        actions=[
            {
                "type": "static_select",
                "action_id": "choose_table",
                "block_id": block["block_id"],
                "selected_option": {"value": "hosts", "text": {"type": "plain_text", "text": "hosts"}},
                "action_ts": "1",
            }
        ],
    )
    assert front.via_lambda(request)["statusCode"] == 200
    job = front.job_in(message["ts"], S.QUEUED)
    assert job.table == "hosts" and job.file_name == "export.csv"


def test_dry_run_of_a_shared_file_uploads_nothing(front: Front) -> None:
    message = front.share(ALICE, "hosts.csv", HOSTS, text="validate hosts")
    front.wait(lambda: "Dry run" in _texts(front, message["ts"]))
    assert "valid" in _texts(front, message["ts"]) and front.jobs() == []


def test_commands_answer_and_unknown_input_gets_help(front: Front, bigpanda_upstream: Upstream) -> None:
    ts = _upload_done(front, bigpanda_upstream, ALICE, HOSTS)
    job = front.job_in(ts)

    help_answer = front.via_lambda(front.signer.slash_command("/table", "frobnicate", user_id=ALICE, channel_id=OPS))
    assert help_answer["statusCode"] == 200, "help is the acknowledgement itself"
    assert "I don't know" in help_answer["body"] and "upload TABLE s3://" in help_answer["body"]

    tables = front.command(ALICE, "tables")
    front.wait(lambda: front.responses(tables))
    assert "hosts" in front.responses(tables)[0]
    in_random = front.command(ALICE, "tables", channel=RANDOM)
    front.wait(lambda: front.responses(in_random))
    assert "No table" in front.responses(in_random)[0]

    for text, expected in (
        ("jobs", job.job_id),
        ("jobs hosts", "done"),
        (f"status {job.job_id}", "done"),
        ("status", job.job_id),
        ("history hosts", "submitted"),
        ("history nope", "no table `nope`"),
    ):
        request = front.command(ALICE, text, via_lambda=False)
        front.wait(lambda r=request: front.responses(r))
        answer = front.responses(request)[0]
        assert expected.lower() in answer.lower(), (text, answer)


def test_restore_is_an_upload_with_preview_confirmation_and_history(front: Front, bigpanda_upstream: Upstream) -> None:
    _upload_done(front, bigpanda_upstream, ALICE, HOSTS)
    _upload_done(front, bigpanda_upstream, ALICE, HOSTS + b"web-3,search,bob\n")
    assert "web-3" in json.dumps(bigpanda_upstream.admin.table("demo"))
    front.command(ALICE, "restore hosts")
    parent = front.wait(lambda: next((m for m in front.slack.messages(OPS) if "restore" in m["text"]), None))
    # Going back removes 1 of 3 rows (33% > 20%): the same removal guard as a shared file.
    job = front.job_in(parent["ts"], S.AWAITING_APPROVAL)
    assert job.source.startswith("restore:") and job.needs_confirmation and not job.needs_approval
    shown = front.transcript(parent["ts"])
    assert "Change preview" in shown and "1 removed" in shown and "web-3" in shown
    front.click(front.message_with(parent["ts"], "confirm_job"), "confirm_job", CAROL)
    front.wait(lambda: any("may confirm" in t for t in front.ephemerals(CAROL)))
    front.click(front.message_with(parent["ts"], "confirm_job"), "confirm_job", ALICE)
    queued = front.job_in(parent["ts"], S.QUEUED)
    assert front.poll_until_ended(queued).state is S.DONE
    table = json.dumps(bigpanda_upstream.admin.table("demo"))
    assert "web-2" in table and "web-3" not in table
    history = [(h.actor, h.to_state, h.reason) for h in front.store.history_for_job(job.job_id)]
    assert history[0][0] == ALICE, "who asked"
    assert any(actor == ALICE and "confirmed" in reason for actor, _, reason in history), "who confirmed"
    status_ts = str(front.store.get_job(job.job_id).status_ts)
    versions = [v["text"] for v in front.slack.message_versions(OPS, status_ts)]
    assert "Restoring" in versions[0] and "Done" in versions[-1]


def test_restore_of_a_dengage_table_is_refused_with_the_reason(front: Front) -> None:
    request = front.command(ALICE, "restore contacts")
    front.wait(lambda: front.responses(request))
    answer = front.responses(request)[-1]
    assert "upserted" in answer and "would not take the table back" in answer
    assert front.jobs() == [] and front.slack.messages(OPS) == []


def test_one_scenario_on_dynamodb(
    tmp_path: Path,
    slack: LocalSlackApi,
    bigpanda_upstream: Upstream,
    dengage_upstream: Upstream,
    dynamodb_endpoint: str,
) -> None:
    table = f"slack-{uuid.uuid4().hex[:10]}"
    admin = dynamodb_client(dynamodb_endpoint)
    create_table(admin, table)
    try:
        store = DynamoJobStore(dynamodb_client(dynamodb_endpoint), table)
        front = build_front(tmp_path, store, slack, bigpanda_upstream.base_url, dengage_upstream.base_url)
        shared = slack.register_file("hosts.csv", HOSTS, user=ALICE, channel=OPS)
        message = slack.share_file(OPS, ALICE, shared["id"], text="hosts")
        event = front.signer.file_share_event(OPS, message)
        front.via_lambda(event)
        front.via_lambda(front.signer.retry(event, 1))
        job = front.job_in(message["ts"], S.QUEUED)
        assert front.poll_until_ended(job).state is S.DONE
        front.lambdas.join()
        assert len(front.jobs()) == 1
        assert "Done" in front.thread(message["ts"])[-1]["text"]
    finally:
        admin.delete_table(TableName=table)


def test_s3_upload_inside_the_allow_list_ends_done_in_its_thread(  # noqa: PLR0917 - pytest fixtures
    tmp_path: Path,
    sqlite_store: JobStore,
    slack: LocalSlackApi,
    bigpanda_upstream: Upstream,
    dengage_upstream: Upstream,
    s3_client: Any,
) -> None:
    bucket = f"ops-tables-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    s3_client.put_object(Bucket=bucket, Key="uploads/hosts.csv", Body=HOSTS)
    front = build_front(
        tmp_path,
        sqlite_store,
        slack,
        bigpanda_upstream.base_url,
        dengage_upstream.base_url,
        extra_env={"TABLEBOT_S3_ALLOWED_PREFIXES": f"s3://{bucket}/uploads/"},
        s3_client=s3_client,
    )
    try:
        # A key that only looks inside the prefix is refused before anything is read.
        escape = front.command(ALICE, f"upload hosts s3://{bucket}/uploads/../private/hosts.csv")
        front.wait(lambda: front.responses(escape))
        assert front.jobs() == []

        front.command(ALICE, f"upload hosts s3://{bucket}/uploads/hosts.csv")
        # Slash commands cannot start threads: the bot posts a parent message and threads under it.
        parent = front.wait(lambda: next(iter(front.slack.messages(OPS)), None))
        job = front.job_in(parent["ts"], S.QUEUED)
        assert job.source == f"s3://{bucket}/uploads/hosts.csv" and job.requested_by == ALICE
        ended = front.poll_until_ended(job)
        assert ended.state is S.DONE
        front.wait(lambda: "Done" in front.transcript(parent["ts"]))
        rows = bigpanda_upstream.admin.table("demo")["rows"]
        assert sorted(tuple(r) if isinstance(r, list) else tuple(r.values()) for r in rows) == [
            ("web-1", "checkout", "alice"),
            ("web-2", "search", "bob"),
        ]
    finally:
        front.lambdas.join()
        front.http.close()
