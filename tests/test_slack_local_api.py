"""The local Slack Web API server, driven by the real slack_sdk WebClient, httpx and slack_bolt."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from slack_bolt import App, BoltRequest
from slack_bolt.adapter.aws_lambda.handler import to_bolt_request
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier

from devtools.slack_api import (
    FILE_DOWNLOAD,
    LocalSlackApi,
    SlackRequestSigner,
    render_blocks,
)

CHANNEL = "C0OPS0001"
ALICE = "U0ALICE01"
SECRET = "test-signing-secret"
CSV = b"host,owner\nweb-1,alice\nweb-2,bob\n"


@pytest.fixture
def api() -> Iterator[LocalSlackApi]:
    with LocalSlackApi() as server:
        server.add_channel(CHANNEL, "ops")
        server.add_user(ALICE, "alice", real_name="Alice Doe")
        yield server
        assert server.internal_errors == []


@pytest.fixture
def client(api: LocalSlackApi) -> WebClient:
    return WebClient(
        token=api.bot_token, base_url=api.base_url, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)]
    )


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as session:
        yield session


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


# -- Web API methods --------------------------------------------------------------------------------


def test_auth_test_checks_the_bearer_token(api: LocalSlackApi, client: WebClient) -> None:
    me = client.auth_test()
    assert me["user_id"] == api.bot_user_id and me["bot_id"] == api.bot_id and me["user"] == "tablebot"

    with pytest.raises(SlackApiError) as wrong:
        WebClient(token="xoxb-wrong", base_url=api.base_url).auth_test()
    assert wrong.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as missing:
        WebClient(base_url=api.base_url).auth_test()
    assert missing.value.response["error"] == "not_authed"

    recorded = api.calls_to("auth.test")
    assert len(recorded) == 3
    assert all("authorization" not in c.headers for c in recorded), "credentials must not be recorded"


def test_post_reply_update_and_read_the_thread(api: LocalSlackApi, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="Uploading hosts.csv")
    assert parent["channel"] == CHANNEL and parent["message"]["text"] == "Uploading hosts.csv"
    status = client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="Validating…")
    done = client.chat_postMessage(
        channel=CHANNEL, thread_ts=parent["ts"], blocks=[section("*Done*: 2 rows")], text="Done"
    )
    assert float(parent["ts"]) < float(status["ts"]) < float(done["ts"]), "ts must be unique and increasing"

    client.chat_update(
        channel=CHANNEL, ts=status["ts"], text="Valid", blocks=[section(":white_check_mark: Valid, 2 rows")]
    )

    replies = client.conversations_replies(channel=CHANNEL, ts=parent["ts"])["messages"]
    assert [m["ts"] for m in replies] == [parent["ts"], status["ts"], done["ts"]]
    assert replies[0]["reply_count"] == 2 and replies[0]["latest_reply"] == done["ts"]
    assert replies[1]["thread_ts"] == parent["ts"] and replies[1]["text"] == "Valid"
    assert [v["text"] for v in api.message_versions(CHANNEL, status["ts"])] == ["Validating…", "Valid"]
    assert api.message(CHANNEL, status["ts"])["edited"]["user"] == api.bot_user_id
    assert [m["ts"] for m in api.messages(CHANNEL)] == [parent["ts"]], "replies are not top-level messages"

    assert api.thread_transcript(CHANNEL, parent["ts"]) == (
        "tablebot: Uploading hosts.csv\ntablebot: :white_check_mark: Valid, 2 rows\ntablebot: *Done*: 2 rows"
    )


def test_replies_are_paginated_with_a_cursor(api: LocalSlackApi, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="parent")
    for n in range(4):
        client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text=f"reply {n}")
    first = client.conversations_replies(channel=CHANNEL, ts=parent["ts"], limit=3)
    assert first["has_more"] is True
    second = client.conversations_replies(
        channel=CHANNEL, ts=parent["ts"], limit=3, cursor=first["response_metadata"]["next_cursor"]
    )
    texts = [m["text"] for m in first["messages"] + second["messages"]]
    assert texts == ["parent", "reply 0", "reply 1", "reply 2", "reply 3"]
    assert second["has_more"] is False


def test_message_metadata_is_kept_and_read_back_only_when_asked(api: LocalSlackApi, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="parent")
    metadata = {"event_type": "tablebot_job_ending", "event_payload": {"job_id": "j1", "ending": "done"}}
    client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="Done", metadata=metadata)
    top = client.chat_postMessage(channel=CHANNEL, text="top", metadata=metadata)

    plain = client.conversations_replies(channel=CHANNEL, ts=parent["ts"])["messages"]
    assert [m.get("metadata") for m in plain] == [None, None], "Slack leaves metadata out unless asked"
    full = client.conversations_replies(channel=CHANNEL, ts=parent["ts"], include_all_metadata=True)["messages"]
    assert [m.get("metadata") for m in full] == [None, metadata]
    history = client.conversations_history(channel=CHANNEL, include_all_metadata=True)["messages"]
    assert [(m["ts"], m.get("metadata")) for m in history] == [(top["ts"], metadata), (parent["ts"], None)]
    assert "metadata" not in client.conversations_history(channel=CHANNEL)["messages"][0]
    assert api.message(CHANNEL, top["ts"])["metadata"] == metadata  # kept as posted


def test_message_errors_are_slack_shaped(api: LocalSlackApi, client: WebClient) -> None:
    with pytest.raises(SlackApiError) as blocks:
        client.chat_postMessage(channel=CHANNEL, text="too many", blocks=[section("x")] * 51)
    assert blocks.value.response["error"] == "invalid_blocks"
    with pytest.raises(SlackApiError) as long_section:
        client.chat_postMessage(channel=CHANNEL, text="long", blocks=[section("x" * 3001)])
    assert "must be less than 3001 characters" in long_section.value.response["errors"][0]
    with pytest.raises(SlackApiError) as no_thread:
        client.chat_postMessage(channel=CHANNEL, thread_ts="1.000001", text="orphan")
    assert no_thread.value.response["error"] == "thread_not_found"
    with pytest.raises(SlackApiError) as missing:
        client.chat_update(channel=CHANNEL, ts="1.000001", text="nothing there")
    assert missing.value.response["error"] == "message_not_found"
    user_message = api.post_user_message(CHANNEL, ALICE, "mine")
    with pytest.raises(SlackApiError) as not_ours:
        client.chat_update(channel=CHANNEL, ts=user_message["ts"], text="edited")
    assert not_ours.value.response["error"] == "cant_update_message"
    with pytest.raises(SlackApiError) as unknown:
        client.api_call("chat.scheduleMessage", json={"channel": CHANNEL, "text": "later"})
    assert unknown.value.response["error"] == "unknown_method"
    assert api.calls_to("chat.scheduleMessage")[0].params == {"channel": CHANNEL, "text": "later"}


def test_strict_mode_refuses_unknown_channels_and_users() -> None:
    with LocalSlackApi(strict=True) as strict:
        client = WebClient(token=strict.bot_token, base_url=strict.base_url)
        with pytest.raises(SlackApiError) as channel:
            client.chat_postMessage(channel="C0NOPE000", text="hi")
        assert channel.value.response["error"] == "channel_not_found"
        with pytest.raises(SlackApiError) as user:
            client.users_info(user="U0NOPE000")
        assert user.value.response["error"] == "user_not_found"


def test_the_other_methods_the_bot_uses(api: LocalSlackApi, client: WebClient) -> None:
    api.add_usergroup("S0ADMINS1", [ALICE])
    posted = client.chat_postMessage(channel=CHANNEL, text="Approve?")

    ephemeral = client.chat_postEphemeral(channel=CHANNEL, user=ALICE, text="Only you can see this")
    assert api.ephemeral_messages(user=ALICE)[0]["ts"] == ephemeral["message_ts"]

    link = client.chat_getPermalink(channel=CHANNEL, message_ts=posted["ts"])["permalink"]
    assert link.endswith(f"/archives/{CHANNEL}/p{posted['ts'].replace('.', '')}")

    client.reactions_add(channel=CHANNEL, timestamp=posted["ts"], name="eyes")
    with pytest.raises(SlackApiError) as twice:
        client.reactions_add(channel=CHANNEL, timestamp=posted["ts"], name="eyes")
    assert twice.value.response["error"] == "already_reacted"
    assert api.message(CHANNEL, posted["ts"])["reactions"] == [{"name": "eyes", "users": [api.bot_user_id], "count": 1}]

    assert client.conversations_info(channel=CHANNEL)["channel"]["name"] == "ops"
    assert client.users_info(user=ALICE)["user"]["real_name"] == "Alice Doe"
    assert client.usergroups_users_list(usergroup="S0ADMINS1")["users"] == [ALICE]
    with pytest.raises(SlackApiError) as no_group:
        client.usergroups_users_list(usergroup="S0NOPE000")
    assert no_group.value.response["error"] == "no_such_subteam"

    dm = client.chat_postMessage(channel=ALICE, text="direct")
    assert dm["channel"].startswith("D")


# -- file hosting -----------------------------------------------------------------------------------


def test_registered_file_downloads_only_with_the_bot_token(
    api: LocalSlackApi, client: WebClient, http: httpx.Client
) -> None:
    shared = api.register_file("hosts.csv", CSV, user=ALICE, channel=CHANNEL)
    assert shared["id"].startswith("F") and shared["filetype"] == "csv" and shared["size"] == len(CSV)
    assert client.files_info(file=shared["id"])["file"]["url_private_download"] == shared["url_private_download"]

    good = http.get(shared["url_private_download"], headers={"Authorization": f"Bearer {api.bot_token}"})
    assert good.status_code == 200 and good.content == CSV and good.headers["content-type"] == "text/csv"

    for headers in ({}, {"Authorization": "Bearer xoxb-someone-else"}):
        refused = http.get(shared["url_private_download"], headers=headers)
        assert refused.status_code == 200, "Slack answers its sign-in page, not an error"
        assert refused.headers["content-type"].startswith("text/html") and b"<html" in refused.content

    downloads = api.calls_to(FILE_DOWNLOAD)
    assert [c.status for c in downloads] == [200, 200, 200]
    assert all(c.params["file_id"] == shared["id"] for c in downloads)


def test_file_access_modes(api: LocalSlackApi, http: httpx.Client) -> None:
    auth = {"Authorization": f"Bearer {api.bot_token}"}
    shared = api.register_file("hosts.csv", CSV, access="html")
    no_access = http.get(shared["url_private_download"], headers=auth)
    assert no_access.status_code == 200 and no_access.headers["content-type"].startswith("text/html")

    api.set_file_access(shared["id"], "redirect", redirect_to="https://elsewhere.invalid/login")
    moved = http.get(shared["url_private_download"], headers=auth)
    assert moved.status_code == 302 and moved.headers["location"] == "https://elsewhere.invalid/login"

    api.set_file_access(shared["id"], "not_found")
    assert http.get(shared["url_private_download"], headers=auth).status_code == 404


def test_large_file_is_streamed_from_its_path(api: LocalSlackApi, http: httpx.Client, tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with big.open("wb") as out:
        out.write(b"id,value\n")
        for chunk in range(200):
            out.write(b"".join(b"%d,%d\n" % (chunk * 5000 + i, i) for i in range(5000)))
    shared = api.register_file("big.csv", path=big)
    assert shared["size"] == big.stat().st_size

    digest = hashlib.sha256()
    with http.stream(
        "GET", shared["url_private_download"], headers={"Authorization": f"Bearer {api.bot_token}"}
    ) as response:
        assert int(response.headers["content-length"]) == shared["size"]
        for chunk in response.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(big.read_bytes()).hexdigest()


def test_slack_connect_files_arrive_as_stubs(api: LocalSlackApi) -> None:
    shared = api.register_file("hosts.csv", CSV, user=ALICE, slack_connect=True)
    message = api.share_file(CHANNEL, ALICE, shared["id"])
    assert message["files"][0] == {
        "id": shared["id"],
        "mode": "file_access",
        "file_access": "check_file_info",
        "created": shared["created"],
        "timestamp": shared["timestamp"],
        "user": ALICE,
    }
    assert api.file_info(shared["id"])["url_private_download"] == shared["url_private_download"]


# -- uploads by the bot ----------------------------------------------------------------------------


def test_upload_v2_lands_in_the_thread(api: LocalSlackApi, client: WebClient) -> None:
    shared = api.register_file("hosts.csv", CSV)
    parent = api.share_file(CHANNEL, ALICE, shared["id"], text="please load")
    client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="3 problems found")
    report = b"line,column,message\n2,owner,empty\n"

    uploaded = client.files_upload_v2(
        channel=CHANNEL, thread_ts=parent["ts"], content=report, filename="report.csv", initial_comment="Full report"
    )
    assert [c.method for c in api.calls][-3:] == [
        "files.getUploadURLExternal",
        "file.upload",
        "files.completeUploadExternal",
    ]
    file_id = uploaded["file"]["id"]
    assert api.file_content(file_id) == report
    assert client.files_info(file=file_id)["file"]["name"] == "report.csv"

    thread = api.thread(CHANNEL, parent["ts"])
    assert thread[-1]["files"][0]["id"] == file_id and thread[-1]["user"] == api.bot_user_id
    assert api.file_info(file_id)["shares"]["public"][CHANNEL][0]["thread_ts"] == parent["ts"]
    assert api.thread_transcript(CHANNEL, parent["ts"]) == (
        "alice: please load\n  [file: hosts.csv]\ntablebot: 3 problems found\ntablebot: Full report\n  [file: report.csv]"
    )


def test_upload_url_accepts_a_chunked_stream(api: LocalSlackApi, client: WebClient, http: httpx.Client) -> None:
    target = client.files_getUploadURLExternal(filename="big.csv", length=3 * 65536)
    body = [bytes([65 + n]) * 65536 for n in range(3)]
    answer = http.post(target["upload_url"], content=iter(body))  # an iterator is sent chunked
    assert answer.status_code == 200 and answer.text == f"OK - {3 * 65536}"
    with pytest.raises(SlackApiError) as unknown:
        client.files_completeUploadExternal(files=[{"id": "F0NOPE000"}])
    assert unknown.value.response["error"] == "file_not_found"
    done = client.files_completeUploadExternal(files=[{"id": target["file_id"], "title": "Big"}])
    assert done["files"][0]["title"] == "Big"
    assert api.file_content(target["file_id"]) == b"".join(body)


def test_legacy_files_upload(api: LocalSlackApi, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="parent")
    with pytest.warns(UserWarning):
        uploaded = client.files_upload(file=CSV, filename="hosts.csv", channels=CHANNEL, thread_ts=parent["ts"])
    assert api.file_content(uploaded["file"]["id"]) == CSV
    assert api.thread(CHANNEL, parent["ts"])[-1]["files"][0]["name"] == "hosts.csv"
    assert api.calls_to("files.upload")[0].params["file"] == f"<{len(CSV)} bytes>", "file bytes are not recorded"


# -- fault injection -------------------------------------------------------------------------------


def test_rate_limit_is_retried_by_slack_sdk(api: LocalSlackApi, client: WebClient) -> None:
    api.rate_limit("chat.postMessage", times=1)
    posted = client.chat_postMessage(channel=CHANNEL, text="after a 429")
    assert posted["ok"] is True
    assert [c.status for c in api.calls_to("chat.postMessage")] == [429, 200]
    assert len(api.messages(CHANNEL)) == 1, "the refused attempt posted nothing"


def test_rate_limit_answers_retry_after(api: LocalSlackApi, http: httpx.Client) -> None:
    api.rate_limit("auth.test", times=2, retry_after=7)
    headers = {"Authorization": f"Bearer {api.bot_token}"}
    for _ in range(2):
        limited = http.post(f"{api.base_url}auth.test", headers=headers)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
        assert limited.json() == {"ok": False, "error": "ratelimited"}
    assert http.post(f"{api.base_url}auth.test", headers=headers).json()["ok"] is True


def test_server_and_api_errors_and_delay(api: LocalSlackApi, client: WebClient) -> None:
    api.server_error("chat.postMessage", status=503)
    with pytest.raises(SlackApiError) as unavailable:
        client.chat_postMessage(channel=CHANNEL, text="x")
    assert unavailable.value.response.status_code == 503

    api.api_error("chat.update", "ratelimited", times=2)
    posted = client.chat_postMessage(channel=CHANNEL, text="x")
    for _ in range(2):
        with pytest.raises(SlackApiError) as refused:
            client.chat_update(channel=CHANNEL, ts=posted["ts"], text="y")
        assert refused.value.response["error"] == "ratelimited"
    assert client.chat_update(channel=CHANNEL, ts=posted["ts"], text="y")["ok"] is True

    api.delay("auth.test", 0.3, times=1)
    started = time.monotonic()
    client.auth_test()
    assert time.monotonic() - started >= 0.3


def test_faults_for_a_time_window() -> None:
    now = [1_700_000_000.0]
    with LocalSlackApi(clock=lambda: now[0]) as api:
        client = WebClient(token=api.bot_token, base_url=api.base_url)
        api.api_error("*", "service_unavailable", seconds=60)
        for _ in range(3):
            with pytest.raises(SlackApiError):
                client.auth_test()
        now[0] += 61
        assert client.auth_test()["ok"] is True
        # With the clock standing still, timestamps still never repeat.
        first, second = (client.chat_postMessage(channel=CHANNEL, text=t)["ts"] for t in "ab")
        assert first == "1700000061.000000" and second == "1700000061.000001"


def test_wait_for_calls_from_another_thread(api: LocalSlackApi, client: WebClient) -> None:
    worker = threading.Thread(target=lambda: client.chat_postMessage(channel=CHANNEL, text="later"))
    worker.start()
    calls = api.wait_for_calls("chat.postMessage", timeout=5)
    worker.join()
    assert calls[0].params["text"] == "later" and calls[0].json_body is True
    with pytest.raises(TimeoutError):
        api.wait_for_calls("chat.delete", timeout=0.2)


# -- signed requests and response_url ----------------------------------------------------------------


def test_signed_slash_command_verifies_and_tampering_fails(api: LocalSlackApi) -> None:
    signer = api.signer(SECRET)
    request = signer.slash_command("/tablebot", "upload s3://bucket/hosts.csv", user_id=ALICE, channel_id=CHANNEL)
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid_request(request.body, request.headers)
    fields = {k: v[0] for k, v in parse_qs(request.body).items()}
    assert (
        fields["command"] == "/tablebot"
        and fields["user_id"] == ALICE
        and fields["response_url"].startswith(api.root_url)
    )

    tampered = request.body.replace("hosts.csv", "other.csv")
    assert not verifier.is_valid_request(tampered, request.headers)
    assert not SignatureVerifier("another-secret").is_valid_request(request.body, request.headers)
    stale = signer.slash_command("/tablebot", "x", user_id=ALICE, channel_id=CHANNEL, timestamp=int(time.time()) - 600)
    assert not verifier.is_valid_request(stale.body, stale.headers)


def test_signed_events_and_retries(api: LocalSlackApi) -> None:
    signer = SlackRequestSigner(SECRET)
    verifier = SignatureVerifier(SECRET)
    shared = api.register_file("hosts.csv", CSV)
    message = api.share_file(CHANNEL, ALICE, shared["id"], text="load this")

    event = signer.file_share_event(CHANNEL, message)
    body = json.loads(event.body)
    assert verifier.is_valid_request(event.body, event.headers)
    assert body["type"] == "event_callback" and body["event_id"].startswith("Ev")
    assert body["event"]["subtype"] == "file_share" and body["event"]["channel"] == CHANNEL
    assert body["event"]["files"][0]["url_private_download"] == shared["url_private_download"]

    retried = signer.retry(event, 2, "http_timeout")
    assert verifier.is_valid_request(retried.body, retried.headers)
    assert json.loads(retried.body)["event_id"] == body["event_id"]
    assert retried.headers["X-Slack-Retry-Num"] == "2" and retried.headers["X-Slack-Retry-Reason"] == "http_timeout"

    file_shared = json.loads(signer.file_shared_event(shared["id"], user_id=ALICE, channel_id=CHANNEL).body)
    assert file_shared["event"] == {
        **file_shared["event"],
        "type": "file_shared",
        "file_id": shared["id"],
        "file": {"id": shared["id"]},
    }


def test_bolt_app_accepts_the_signed_requests_and_answers_here(api: LocalSlackApi, client: WebClient) -> None:
    """The Bolt framework the bot is built on verifies these requests and talks back to this server."""
    app = App(signing_secret=SECRET, client=client, process_before_response=True)
    signer = api.signer(SECRET)

    @app.command("/tablebot")
    def on_command(ack: Any, respond: Any, command: dict[str, Any]) -> None:
        ack()
        respond(text=f"Checking {command['text']}", response_type="in_channel")

    @app.action("approve")
    def on_approve(ack: Any, body: dict[str, Any], client: WebClient) -> None:
        ack()
        client.chat_update(
            channel=body["channel"]["id"], ts=body["message"]["ts"], text=f"Approved by <@{body['user']['id']}>"
        )

    command = signer.slash_command("/tablebot", "hosts.csv", user_id=ALICE, channel_id=CHANNEL)
    assert app.dispatch(BoltRequest(body=command.body, headers=command.headers)).status == 200
    posts = api.response_url_posts(command.payload["response_url"])
    assert [p.payload["text"] for p in posts] == ["Checking hosts.csv"]
    assert api.messages(CHANNEL)[-1]["text"] == "Checking hosts.csv", "in_channel responses appear in the channel"

    buttons = {"type": "actions", "block_id": "decide", "elements": [
        {"type": "button", "action_id": "approve", "text": {"type": "plain_text", "text": "Approve"}, "value": "job-1"},
    ]}  # fmt: skip
    asking = client.chat_postMessage(channel=CHANNEL, text="Approve?", blocks=[section("Approve hosts.csv?"), buttons])
    assert render_blocks(asking["message"]["blocks"]) == ["Approve hosts.csv?", "[Approve]"]
    click = signer.click_button(asking["message"], "approve", user_id=ALICE, channel_id=CHANNEL)
    assert click.payload["actions"][0]["value"] == "job-1" and click.payload["container"]["message_ts"] == asking["ts"]
    assert app.dispatch(BoltRequest(body=click.body, headers=click.headers)).status == 200
    assert api.message(CHANNEL, asking["ts"])["text"] == f"Approved by <@{ALICE}>"

    # The same command as API Gateway hands it to the Lambda handler.
    from_lambda = to_bolt_request(
        signer.slash_command("/tablebot", "again.csv", user_id=ALICE, channel_id=CHANNEL).lambda_event()
    )
    assert app.dispatch(from_lambda).status == 200
    assert api.messages(CHANNEL)[-1]["text"] == "Checking again.csv"

    forged = BoltRequest(body=command.body, headers={**command.headers, "X-Slack-Signature": "v0=" + "0" * 64})
    assert app.dispatch(forged).status == 401
    with pytest.raises(LookupError):
        signer.click_button(asking["message"], "reject", user_id=ALICE, channel_id=CHANNEL)


def test_response_url_modes_and_use_limit(api: LocalSlackApi, http: httpx.Client) -> None:
    posted = api.post_user_message(CHANNEL, ALICE, "placeholder")
    ephemeral_url = api.new_response_url(channel=CHANNEL, user=ALICE)
    assert http.post(ephemeral_url, json={"text": "only you"}).json() == {"ok": True}
    assert api.ephemeral_messages(channel=CHANNEL, user=ALICE)[0]["text"] == "only you"

    for _ in range(4):
        assert http.post(ephemeral_url, json={"text": "again"}).status_code == 200
    used = http.post(ephemeral_url, json={"text": "sixth"})
    assert used.status_code == 404 and used.json()["error"] == "used_url"
    assert http.post(f"{api.root_url}/response/unknown", json={"text": "x"}).json()["error"] == "expired_url"

    bot_message = WebClient(token=api.bot_token, base_url=api.base_url).chat_postMessage(
        channel=CHANNEL, text="Pending"
    )
    replace_url = api.new_response_url(channel=CHANNEL, user=ALICE, message_ts=bot_message["ts"])
    http.post(replace_url, json={"replace_original": True, "text": "Approved"})
    assert api.message(CHANNEL, bot_message["ts"])["text"] == "Approved"
    http.post(replace_url, json={"delete_original": True})
    assert [m["ts"] for m in api.messages(CHANNEL)] == [posted["ts"]]


def test_lambda_event_carries_the_signed_request() -> None:
    request = SlackRequestSigner(SECRET).url_verification("challenge-1")
    event = request.lambda_event()
    assert event["body"] == request.body and event["requestContext"]["http"]["method"] == "POST"
    assert SignatureVerifier(SECRET).is_valid_request(event["body"], event["headers"])


def test_render_blocks_as_a_person_reads_them() -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "hosts.csv is invalid"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Rows* 3"}, {"type": "mrkdwn", "text": "*Errors* 1"}]},
        {"type": "divider"},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "line 2, column owner"}]},
        {"type": "rich_text", "elements": [
            {"type": "rich_text_section", "elements": [{"type": "text", "text": "fix "}, {"type": "user", "user_id": ALICE}]},
            {"type": "rich_text_list", "elements": [
                {"type": "rich_text_section", "elements": [{"type": "text", "text": "one"}]},
                {"type": "rich_text_section", "elements": [{"type": "emoji", "name": "x"}]},
            ]},
        ]},
    ]  # fmt: skip
    assert render_blocks(blocks) == [
        "hosts.csv is invalid",
        "*Rows* 3",
        "*Errors* 1",
        "---",
        "line 2, column owner",
        f"fix <@{ALICE}>",
        "one",
        ":x:",
    ]
