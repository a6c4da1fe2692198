"""The Slack front end against traffic shaped like Slack's own, and against hostile text.

Every scenario goes through the Lambda handler (signed requests, lazy listeners re-invoked
in-process) to the local Slack Web API server, the sandboxes and a real job store. Where each
payload shape comes from:

- `message` with subtype `file_share` and full `files[]`: the Events API `message.channels` /
  `message.im` events (https://api.slack.com/events/message/file_share); the local server builds
  the event from the message and file objects it hosts (`SlackRequestSigner.file_share_event`).
- A deleted file in `files[]` is a file object with `"mode": "tombstone"` and no name or URL
  (https://api.slack.com/types/file, "mode"); a Google Drive file is `"mode": "external"`,
  `"is_external": true`, `"external_type": "gdrive"`, its `url_private` on the external host
  (the file object of files.remote.info, https://docs.slack.dev/reference/methods/files.remote.info).
- A Slack Connect file arrives as a stub with `"file_access": "check_file_info"` (the local
  server's `slack_connect=True`, as Slack documents for files of shared channels); a person of
  another organisation carries `user_team`/`source_team` on message events (@slack/types
  `FileShareMessageEvent`) and `user.team_id` on `block_actions` (the interaction payload
  reference, https://api.slack.com/reference/interaction-payloads/block-actions).
- `app_mention`: the example of https://api.slack.com/events/app_mention; a direct message: a
  `message` event with `"channel_type": "im"` (https://api.slack.com/events/message.im).
- Retries: the same body again with `X-Slack-Retry-Num` 1-3 and `X-Slack-Retry-Reason`
  (https://api.slack.com/apis/events-api#retries).
"""

from __future__ import annotations

import copy
import csv
import io
import json
from typing import Any
from urllib.parse import urlencode

from devtools.slack_api import SignedRequest
from tests.fixtures_upstream import Upstream
from tests.slack_support import ALICE, BOB, CAROL, OPS, OTHER_TEAM, RANDOM, TEAM, Front, S

HOSTS = b"host,service,owner\nweb-1,checkout,alice\nweb-2,search,bob\n"
CONTACTS = b"contact_key,email,city\nc1,a@example.com,Oslo\nc2,b@example.com,Rome\n"
HOSTILE = "<!channel> <https://evil.example|Re-login here>"
RAW_MARKUP = ("<!channel>", "<!here>", "<https://evil", "<!everyone>")


def _no_raw_markup(front: Front) -> None:
    said = "\n".join(front.bot_posts())
    for raw in RAW_MARKUP:
        assert raw not in said, f"{raw} reached Slack as markup"


def _retries(front: Front, request: SignedRequest) -> None:
    for number, reason in ((1, "http_timeout"), (2, "http_error"), (3, "http_timeout")):
        assert front.via_lambda(front.signer.retry(request, number, reason))["statusCode"] == 200


def _select(front: Front, menu: dict[str, Any], user: str, table: str, team: str | None = None) -> None:
    block = menu["blocks"][0]
    request = front.signer.block_actions(
        user_id=user,
        channel_id=OPS,
        message=menu,
        actions=[
            {
                "type": "static_select",
                "action_id": "choose_table",
                "block_id": block["block_id"],
                "selected_option": {"value": table, "text": {"type": "plain_text", "text": table}},
                "action_ts": "1700000000.000100",
            }
        ],
    )
    if team is not None:  # a person of another organisation: `user.team_id` is their team
        payload = copy.deepcopy(request.payload)
        payload["user"]["team_id"] = team
        request = _resigned_interaction(front, payload)
    assert front.via_lambda(request)["statusCode"] == 200


def _resigned_interaction(front: Front, payload: dict[str, Any]) -> SignedRequest:
    return front.signer.sign(
        urlencode({"payload": json.dumps(payload)}), payload, content_type="application/x-www-form-urlencoded"
    )


def _menus(front: Front, thread_ts: str) -> list[dict[str, Any]]:
    return [m for m in front.thread(thread_ts) if "which table" in m.get("text", "")]


# -- 1. hostile text: escaped at the boundary -------------------------------------------------------


def test_hostile_file_name_and_header_are_shown_not_obeyed(front: Front, bigpanda_upstream: Upstream) -> None:
    # A header that would ping the channel and post a phishing link, a formula header, and enough
    # broken rows that the full report is attached as a CSV.
    header = f'host,service,owner,"{HOSTILE}",=HYPERLINK("https://evil.example")\n'.encode()
    rows = b"".join(b"web-%d,svc\n" % i for i in range(15))
    message = front.share(ALICE, "<!here>.csv", header + rows, text="hosts <!channel>")
    job = front.job_in(message["ts"], S.INVALID)
    front.wait(lambda: front.slack.calls_to("files.completeUploadExternal"))
    bot_replies = json.dumps([m for m in front.thread(message["ts"]) if m.get("bot_id")])
    assert (
        "&lt;!here&gt;.csv" in bot_replies
        and "&lt;!channel&gt; &lt;https://evil.example|Re-login here&gt;" in bot_replies
    )
    assert job.file_name == "<!here>.csv", "the job keeps the name as given; only rendering escapes it"
    _no_raw_markup(front)
    report_file = front.thread(message["ts"])[-1]["files"][0]
    assert report_file["name"] == "here-report.csv"
    report = list(csv.reader(io.StringIO(front.slack.file_content(report_file["id"]).decode())))
    cells = [cell for row in report[1:] for cell in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@"))], "no cell can run as a formula"
    assert any(c.startswith("'=HYPERLINK") for c in cells)
    assert bigpanda_upstream.admin.requests("/map") == []


def test_hostile_words_in_commands_are_echoed_as_text(front: Front) -> None:
    answer = front.via_lambda(
        front.signer.slash_command("/table", f"frobnicate {HOSTILE}", user_id=ALICE, channel_id=OPS)
    )
    assert "I don't know" in answer["body"] and "&lt;!channel&gt;" in answer["body"]
    assert "<!channel>" not in answer["body"] and "<https://evil" not in answer["body"]
    for text in ("history <!here>", "jobs <!channel>", "upload <!here> s3://b/<!channel>.csv"):
        request = front.command(ALICE, text)
        front.wait(lambda r=request: front.responses(r))
        said = front.responses(request)[-1]
        assert "no table" in said.lower() and "&lt;!" in said, (text, said)
    posted = json.dumps([p.payload for p in front.slack.response_url_posts()])
    for raw in RAW_MARKUP:
        assert raw not in posted
    _no_raw_markup(front)


def test_hostile_values_in_a_valid_file_stay_data_in_the_preview(front: Front, bigpanda_upstream: Upstream) -> None:
    first = front.share(ALICE, "hosts.csv", HOSTS, text="hosts")
    assert front.poll_until_ended(front.job_in(first["ts"], S.QUEUED)).state is S.DONE
    hostile = HOSTS + f'web-3,"{HOSTILE}",`x`\n'.encode()
    message = front.share(ALICE, "hosts.csv", hostile, text="hosts")
    front.job_in(message["ts"], S.QUEUED)
    front.wait(lambda: "Change preview" in front.transcript(message["ts"]))
    assert "&lt;https://evil.example|Re-login here&gt;" in json.dumps(front.thread(message["ts"]))
    _no_raw_markup(front)


# -- 2. file shares, file by file -------------------------------------------------------------------


def test_each_file_goes_to_the_table_its_own_name_names(front: Front) -> None:
    message = front.share_files(ALICE, [("hosts.csv", HOSTS), ("contacts.csv", CONTACTS)], "hosts and contacts update")
    front.wait(lambda: len([j for j in front.jobs() if j.state is S.QUEUED]) == 2)
    tables = {j.file_name: j.table for j in front.jobs()}
    assert tables == {"hosts.csv": "hosts", "contacts.csv": "contacts"}
    assert all(j.thread_ts == message["ts"] for j in front.jobs())


def test_a_file_without_its_own_table_name_takes_the_one_table_named(front: Front) -> None:
    message = front.share(ALICE, "export-2024.csv", HOSTS, text="new hosts, please")
    assert front.job_in(message["ts"], S.QUEUED).table == "hosts"


def test_two_tables_named_for_an_unnamed_file_ask_never_guess(front: Front) -> None:
    message = front.share(ALICE, "export.csv", HOSTS, text="for hosts or contacts?")
    menu = front.wait(lambda: next(iter(_menus(front, message["ts"])), None))
    options = [o["value"] for o in menu["blocks"][0]["accessory"]["options"]]
    assert options == ["hosts", "contacts"] and front.jobs() == []


def test_files_that_are_not_csv_get_a_line_saying_what_is_accepted(front: Front) -> None:
    files = [("hosts.xlsx", b"PK\x03\x04"), ("map.png", b"\x89PNG"), ("hosts.csv.gz", b"\x1f\x8b"), ("h.tsv", b"a\tb")]
    message = front.share_files(ALICE, files, "hosts")
    reply = front.wait(lambda: next((m for m in front.thread(message["ts"]) if "I take CSV" in m["text"]), None))
    for name in ("hosts.xlsx", "map.png", "hosts.csv.gz", "h.tsv"):
        assert name in reply["text"]
    front.lambdas.join()
    assert front.jobs() == [] and len(front.thread(message["ts"])) == 2, "one reply for the four files"


def test_no_table_here_and_none_named_means_quiet(front: Front) -> None:
    quiet = front.share(ALICE, "hosts.xlsx", b"PK", text="look at this", channel=RANDOM)
    quiet_csv = front.share(ALICE, "export.csv", HOSTS, text="fyi", channel=RANDOM)
    named = front.share(ALICE, "hosts.xlsx", b"PK", text="for hosts", channel=RANDOM)
    front.wait(lambda: len(front.thread(named["ts"], RANDOM)) == 2)
    front.lambdas.join()
    assert len(front.thread(quiet["ts"], RANDOM)) == 1, "no reply for a non-CSV file where no table is used"
    assert len(front.thread(quiet_csv["ts"], RANDOM)) == 1, "no reply in a channel no table uses"
    assert front.slack.ephemeral_messages(channel=RANDOM) == []


def test_unreadable_files_get_their_own_line_and_do_not_stop_the_others(front: Front) -> None:
    valid = front.slack.register_file("hosts.csv", HOSTS, user=ALICE, channel=OPS)
    message = front.slack.post_user_message(OPS, ALICE, "hosts", files=[valid["id"]])
    event = copy.deepcopy(message)
    tombstone = {"id": "F0DELETED1", "mode": "tombstone"}
    gdrive = {
        "id": "F0GDRIVE01",
        "created": 1700000000,
        "timestamp": 1700000000,
        "name": "hosts (Google Sheets)",
        "title": "hosts",
        "mimetype": "application/vnd.google-apps.spreadsheet",
        "filetype": "gsheet",
        "pretty_type": "Google Sheets",
        "user": ALICE,
        "mode": "external",
        "is_external": True,
        "external_type": "gdrive",
        "url_private": "https://docs.google.com/spreadsheets/d/abc/edit",
        "size": 0,
    }
    no_access = {"id": "F0NOACCESS", "mode": "file_access", "file_access": "check_file_info", "user": ALICE}
    event["files"] = [tombstone, gdrive, no_access, *event["files"]]
    request = front.signer.file_share_event(OPS, event)
    assert front.via_lambda(request)["statusCode"] == 200
    job = front.job_in(message["ts"], S.QUEUED)
    assert job.file_name == "hosts.csv"
    reply = front.wait(lambda: next((m for m in front.thread(message["ts"]) if "deleted" in m["text"]), None))
    assert "outside Slack" in reply["text"] and "gdrive" in reply["text"] and "cannot read" in reply["text"]
    assert len(front.jobs()) == 1, "no job (and no invalid record) for the files that could not be read"
    assert "went wrong" not in front.transcript(message["ts"])


# -- 3. once per delivery ---------------------------------------------------------------------------


def test_retries_post_no_second_menu_dry_run_or_refusal(front: Front) -> None:
    # A menu
    shared = front.slack.register_file("export.csv", HOSTS, user=ALICE, channel=OPS)
    menu_message = front.slack.share_file(OPS, ALICE, shared["id"], text="here you go")
    menu_event = front.signer.file_share_event(OPS, menu_message)
    front.via_lambda(menu_event)
    _retries(front, menu_event)
    # A dry run
    dry = front.slack.register_file("hosts.csv", HOSTS, user=ALICE, channel=OPS)
    dry_message = front.slack.share_file(OPS, ALICE, dry["id"], text="validate hosts")
    dry_event = front.signer.file_share_event(OPS, dry_message)
    front.via_lambda(dry_event)
    _retries(front, dry_event)
    # A refusal
    refused = front.slack.register_file("hosts.csv", HOSTS, user=CAROL, channel=OPS)
    refused_message = front.slack.share_file(OPS, CAROL, refused["id"], text="hosts")
    refused_event = front.signer.file_share_event(OPS, refused_message)
    front.via_lambda(refused_event)
    _retries(front, refused_event)
    front.lambdas.join()
    assert len(_menus(front, menu_message["ts"])) == 1
    assert len([m for m in front.thread(dry_message["ts"]) if "Dry run" in m["text"]]) == 1
    assert len(front.slack.calls_to("file.download")) == 1, "the dry run's file was downloaded once"
    assert len([m for m in front.thread(refused_message["ts"]) if "not on the list" in m["text"]]) == 1
    assert front.jobs() == []


def test_a_menu_answers_once_and_later_pickers_are_told_who_chose(front: Front) -> None:
    message = front.share(ALICE, "export.csv", HOSTS, text="new data")
    menu = front.wait(lambda: next(iter(_menus(front, message["ts"])), None))
    _select(front, menu, ALICE, "hosts")
    job = front.job_in(message["ts"], S.QUEUED)
    _select(front, menu, BOB, "contacts")  # BOB may upload contacts (users = "*")
    front.wait(lambda: any("chose first" in t for t in front.ephemerals(BOB)))
    told = next(t for t in front.ephemerals(BOB) if "chose first" in t)
    assert "hosts" in told and ALICE in told
    front.lambdas.join()
    assert [j.table for j in front.jobs()] == ["hosts"] and job.requested_by == ALICE
    versions = front.slack.message_versions(OPS, menu["ts"])
    assert len(versions) == 2 and "hosts" in versions[-1]["text"], "the menu is rewritten once, by the first pick"


# -- 4. permissions: Slack Connect, visibility, approval versus confirmation -------------------------


def _connect_share(front: Front, name: str, content: bytes, text: str) -> dict[str, Any]:
    shared = front.slack.register_file(name, content, user=ALICE, channel=OPS, slack_connect=True)
    message = front.slack.share_file(OPS, ALICE, shared["id"], text=text)
    event = {**copy.deepcopy(message), "user_team": OTHER_TEAM, "source_team": OTHER_TEAM, "team": OTHER_TEAM}
    assert front.via_lambda(front.signer.file_share_event(OPS, event))["statusCode"] == 200
    return message


def test_slack_connect_people_are_refused_unless_the_table_allows_them(front: Front) -> None:
    refused = _connect_share(front, "hosts.csv", HOSTS, "hosts")
    front.wait(lambda: "Slack Connect" in front.transcript(refused["ts"]))
    allowed = _connect_share(front, "contacts.csv", CONTACTS, "contacts")
    job = front.job_in(allowed["ts"], S.QUEUED)
    assert job.table == "contacts", "allow_external_users = true"
    assert [j.table for j in front.jobs()] == ["contacts"]


def test_slack_connect_approvers_cannot_approve(front: Front) -> None:
    message = front.share(ALICE, "gated.csv", HOSTS, text="gated")
    front.job_in(message["ts"], S.AWAITING_APPROVAL)
    asking = front.message_with(message["ts"], "approve_job")
    request = front.signer.click_button(asking, "approve_job", user_id=BOB, channel_id=OPS)
    payload = copy.deepcopy(request.payload)
    payload["user"]["team_id"] = OTHER_TEAM
    assert front.via_lambda(_resigned_interaction(front, payload))["statusCode"] == 200
    front.wait(lambda: any("Slack Connect" in t for t in front.ephemerals(BOB)))
    assert front.jobs()[0].state is S.AWAITING_APPROVAL


def test_slack_connect_commands_see_and_do_only_what_the_tables_allow(front: Front) -> None:
    # A slash command from another organisation's workspace: its `team_id` is theirs.
    for text, expected in (("upload hosts s3://b/hosts.csv", "Slack Connect"), ("history hosts", "may not see")):
        request = front.signer.slash_command("/table", text, user_id=ALICE, channel_id=OPS)
        fields = {**request.payload, "team_id": OTHER_TEAM}
        signed = front.signer.sign(urlencode(fields), fields, content_type="application/x-www-form-urlencoded")
        assert front.via_lambda(signed)["statusCode"] == 200
        front.wait(lambda r=signed: front.responses(r))
        assert expected in front.responses(signed)[-1], (text, front.responses(signed))
    assert front.jobs() == [] and front.slack.messages(OPS) == []


def test_status_jobs_history_show_only_tables_the_caller_may_use(front: Front, bigpanda_upstream: Upstream) -> None:
    message = front.share(ALICE, "hosts.csv", HOSTS, text="hosts")
    job = front.poll_until_ended(front.job_in(message["ts"], S.QUEUED))
    for text, hidden in (("jobs", "hosts.csv"), (f"status {job.job_id}", "hosts.csv"), ("history hosts", job.job_id)):
        request = front.command(CAROL, text)
        front.wait(lambda r=request: front.responses(r))
        answer = front.responses(request)[-1]
        assert hidden not in answer, (text, answer)
    mine = front.command(ALICE, "jobs")
    front.wait(lambda: front.responses(mine))
    assert "hosts.csv" in front.responses(mine)[-1]
    approver = front.command(BOB, "history gated")  # BOB approves gated through his group
    front.wait(lambda: front.responses(approver))
    assert "No uploads" in front.responses(approver)[-1]


def test_approval_and_confirmation_are_separate_requirements(front: Front, bigpanda_upstream: Upstream) -> None:
    first = b"host,service,owner\n" + b"".join(b"web-%d,svc,team\n" % i for i in range(10))
    message = front.share(ALICE, "gated.csv", first, text="gated")
    front.job_in(message["ts"], S.AWAITING_APPROVAL)
    front.click(front.message_with(message["ts"], "approve_job"), "approve_job", BOB)
    job = front.poll_until_ended(front.job_in(message["ts"], S.QUEUED))
    assert job.state is S.DONE
    # Now ALICE's file removes 5 of 10 rows: it needs BOB's approval AND a confirmation.
    second = b"host,service,owner\n" + b"".join(b"web-%d,svc,team\n" % i for i in range(5))
    message = front.share(ALICE, "gated.csv", second, text="gated")
    job = front.job_in(message["ts"], S.AWAITING_APPROVAL)
    assert job.needs_approval and job.needs_confirmation
    asking = front.message_with(message["ts"], "confirm_job")
    front.click(asking, "approve_job", ALICE)
    front.wait(lambda: any("own upload" in t for t in front.ephemerals(ALICE)))
    front.click(asking, "confirm_job", ALICE)  # the requester may confirm the removal...
    front.wait(lambda: front.store.get_job(job.job_id).confirmed_by == ALICE)
    assert front.store.get_job(job.job_id).state is S.AWAITING_APPROVAL, "...which is not an approval"
    again = front.message_with(message["ts"], "approve_job")
    front.click(again, "approve_job", BOB)
    queued = front.job_in(message["ts"], S.QUEUED)
    assert (queued.approver, queued.confirmed_by) == (BOB, ALICE)
    reasons = [h.reason for h in front.store.history_for_job(job.job_id)]
    assert any("confirmed by" in r for r in reasons) and any("approved by" in r for r in reasons)


# -- 6. reach: mentions, direct messages, team channels ----------------------------------------------


def test_a_mention_and_a_direct_message_get_the_help(front: Front) -> None:
    mention = {
        "type": "app_mention",
        "user": ALICE,
        "text": f"<@{front.slack.bot_user_id}> help",
        "ts": "1700000100.000100",
        "channel": OPS,
        "event_ts": "1700000100.000100",
    }
    front.slack.post_user_message(OPS, ALICE, mention["text"])
    parent = front.slack.messages(OPS)[-1]
    mention["ts"] = mention["event_ts"] = parent["ts"]
    request = front.send_event(mention)
    _retries(front, request)
    front.wait(lambda: len(front.thread(parent["ts"])) == 2)
    assert "What I can do" in front.thread(parent["ts"])[-1]["text"]
    dm = front.slack.post_user_message(ALICE, ALICE, "hi, what can you do?")
    channel = f"D{ALICE[1:]}"
    front.send_event({**dm, "channel": channel, "channel_type": "im", "event_ts": dm["ts"]})
    front.wait(lambda: any("What I can do" in m["text"] for m in front.slack.thread(channel, dm["ts"])))
    front.lambdas.join()
    assert len(front.thread(parent["ts"])) == 2, "the retries got no second answer"


def _share_in_dm(front: Front, user: str, name: str, content: bytes) -> dict[str, Any]:
    shared = front.slack.register_file(name, content, user=user, channel=user)
    message = front.slack.share_file(user, user, shared["id"])  # the person's DM with the bot
    channel = f"D{user[1:]}"
    request = front.signer.file_share_event(channel, message, channel_type="im")
    assert front.via_lambda(request)["statusCode"] == 200
    return message


def test_a_csv_shared_in_a_direct_message_is_uploaded_when_the_table_allows_dms(front: Front) -> None:
    channel = f"D{ALICE[1:]}"
    contacts = _share_in_dm(front, ALICE, "contacts.csv", CONTACTS)
    job = front.job_in(contacts["ts"], S.QUEUED)
    assert job.table == "contacts" and job.channel_id == channel
    hosts = _share_in_dm(front, ALICE, "hosts.csv", HOSTS)
    front.wait(lambda: "direct messages" in front.slack.thread_transcript(channel, hosts["ts"]))
    export = _share_in_dm(front, CAROL, "export.csv", HOSTS)  # CAROL may upload only contacts
    carol_dm = f"D{CAROL[1:]}"
    menu = front.wait(
        lambda: next((m for m in front.slack.thread(carol_dm, export["ts"]) if "which table" in m["text"]), None)
    )
    assert [o["value"] for o in menu["blocks"][0]["accessory"]["options"]] == ["contacts"]
    assert [j.table for j in front.jobs()] == ["contacts"]


def test_every_ending_of_a_table_is_announced_in_its_team_channel(front: Front, bigpanda_upstream: Upstream) -> None:
    message = front.share(ALICE, "hosts.csv", HOSTS, text="hosts")
    assert front.poll_until_ended(front.job_in(message["ts"], S.QUEUED)).state is S.DONE
    bigpanda_upstream.admin.fault("job_failed")
    failing = front.share(ALICE, "hosts.csv", HOSTS + b"web-3,x,y\n", text="hosts")
    failed = front.poll_until_ended(front.job_in(failing["ts"], S.QUEUED))
    assert failed.state is S.FAILED
    front.click(front.message_with(failing["ts"], "retry_job"), "retry_job", ALICE)  # a retry's ending too
    assert front.poll_until_ended(front.job_in(failing["ts"], S.QUEUED)).state is S.DONE
    broken = front.share(ALICE, "hosts.csv", b"host,service,owner\nweb-1\n", text="hosts")  # ended by the front end
    front.job_in(broken["ts"], S.INVALID)
    front.wait(lambda: len(front.slack.messages(TEAM)) == 4)
    announced = [m["text"] for m in front.slack.messages(TEAM)]
    assert "Done" in announced[0] and "Failed" in announced[1] and "Done" in announced[2]
    assert "Not uploaded" in announced[3] and "problems" in announced[3]
    links = json.dumps(front.slack.messages(TEAM))
    assert f"/archives/{OPS}/p{message['ts'].replace('.', '')}" in links, "a link to the thread"
    contacts = front.share(ALICE, "contacts.csv", CONTACTS, text="contacts")
    front.poll_until_ended(front.job_in(contacts["ts"], S.QUEUED))
    front.lambdas.join()
    assert len(front.slack.messages(TEAM)) == 4, "only the tables that name the channel, each ending once"
