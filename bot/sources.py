"""Stream a CSV from a Slack file or an S3 object into staging, with sha256, size and a size cap.

Nothing here holds a whole file: bytes flow from the source to `Staging.put` chunk by chunk, the
cap is counted on the way, and a file that goes over it is aborted, leaving nothing in staging.
Every failure is a `SourceError` with a stable `code` and a message for the user that says what
to do. The bot token never appears in an error or a log line (nor does a URL's query string).

Slack files are fetched from `url_private_download` with the bot token, only from Slack's file
host (`SourceSettings.slack_file_hosts`), over https, following redirects by hand and only to
allowed hosts. Slack answers a download it will not allow with an HTML page (status 200), not an
error: that is recognised (Content-Type or the first bytes) and reported as `no_access`.

S3 objects are read only under the configured `s3://bucket/prefix/` allow-list (empty: none).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from bot.errors import ConfigError, SourceError
from bot.settings import Settings
from bot.staging.base import CHUNK_SIZE, Staging

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

MB = 1000 * 1000
# BigPanda's documented limit; read as decimal megabytes, the stricter of the two readings.
DEFAULT_MAX_BYTES = 500 * MB
DEFAULT_SLACK_FILE_HOSTS = ("files.slack.com",)
DEFAULT_MAX_REDIRECTS = 3
# Enough to see past a BOM and blank lines to an HTML page's first tag.
_SNIFF_BYTES = 512
_CONTROL_OR_BACKSLASH = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(frozen=True)
class StagedFile:
    key: str
    size: int
    sha256: str  # lowercase hex
    file_name: str


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class S3Prefix:
    """One entry of the S3 allow-list: a bucket and a folder in it (empty: the whole bucket)."""

    bucket: str
    prefix: str  # "" or ends with "/"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def contains(self, location: S3Location) -> bool:
        return location.bucket == self.bucket and location.key.startswith(self.prefix)


@dataclass(frozen=True)
class SourceSettings:
    max_bytes: int = DEFAULT_MAX_BYTES
    slack_file_hosts: tuple[str, ...] = DEFAULT_SLACK_FILE_HOSTS
    # http is for a local stand-in of Slack's file host in tests and demos, never production.
    allow_http: bool = False
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    s3_allowed_prefixes: tuple[S3Prefix, ...] = field(default_factory=tuple)

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceSettings:
        return cls(
            max_bytes=settings.max_file_bytes,
            slack_file_hosts=tuple(h.lower() for h in settings.slack_file_hosts),
            allow_http=settings.allow_http_downloads,
            s3_allowed_prefixes=parse_s3_allow_list(settings.s3_allowed_prefixes),
        )


def parse_s3_allow_list(entries: Iterable[str]) -> tuple[S3Prefix, ...]:
    """`["s3://ops-tables/uploads/"]` → allow-list; a prefix always ends at a folder boundary."""
    allowed = []
    for entry in entries:
        try:
            bucket, key = _split_s3_uri(entry)
            folder = _normalize_key(key)
        except SourceError:
            raise ConfigError(f"S3 allow-list entry {entry!r} must look like s3://bucket/folder/") from None
        allowed.append(S3Prefix(bucket=bucket, prefix=f"{folder}/" if folder else ""))
    return tuple(allowed)


def human_size(size: int) -> str:
    if size >= MB:
        return f"{size / MB:,.0f} MB" if size % MB == 0 else f"{size / MB:,.1f} MB"
    return f"{size:,} bytes"


def _too_large(file_name: str, max_bytes: int, *, stopped: bool) -> SourceError:
    how = f" (stopped reading at {human_size(max_bytes)})" if stopped else ""
    return SourceError(
        "too_large",
        f"{file_name} is larger than the {human_size(max_bytes)} limit{how}. Make it smaller: drop columns "
        f"the table does not use or rows it does not need; for a table that is upserted, split the rows "
        f"into several files under {human_size(max_bytes)} and upload them one after another.",
    )


def _capped(chunks: Iterable[bytes], max_bytes: int, file_name: str) -> Iterator[bytes]:
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > max_bytes:
            raise _too_large(file_name, max_bytes, stopped=True)
        yield chunk


# --- Slack ---------------------------------------------------------------------------------------

_NO_ACCESS_HINT = (
    "Invite the bot to the channel where the file was shared (/invite @the-bot), check that the Slack "
    "app has the files:read scope, and for a file from a Slack Connect channel (file_access: "
    "check_file_info) share it again in a channel of this workspace that the bot is in."
)


def _login_page(file_name: str) -> SourceError:
    return SourceError(
        "no_access", f"Slack sent a web page instead of {file_name}: the bot cannot read this file. {_NO_ACCESS_HINT}"
    )


def _slack_url(url: httpx.URL, settings: SourceSettings, *, redirected: bool) -> httpx.URL:
    """`url` if it points at Slack's file host over an allowed scheme; SourceError otherwise."""
    host = (url.host or "").lower()
    allowed_schemes = ("https", "http") if settings.allow_http else ("https",)
    if host not in settings.slack_file_hosts or url.scheme not in allowed_schemes:
        where = f"{url.scheme}://{host}" if host else "an address that is not a web address"
        what = "Slack redirected the download to" if redirected else "The file link points at"
        raise SourceError(
            "not_allowed",
            f"{what} {where}, which is not Slack's file host "
            f"({', '.join('https://' + h for h in settings.slack_file_hosts)}); the bot only downloads from there. "
            "Share the CSV file itself in the channel (not a link to it).",
        )
    return url


def _is_html(first_bytes: bytes) -> bool:
    start = first_bytes.lstrip(b"\xef\xbb\xbf").lstrip().lower()
    return start.startswith((b"<!doctype", b"<html"))


def _sniffed(chunks: Iterator[bytes]) -> tuple[bytes, Iterator[bytes]]:
    """The first few hundred bytes (fewer if the body is shorter), and the rest still to read."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= _SNIFF_BYTES:
            break
    return head, chunks


def stage_slack_file(
    http: httpx.Client,
    staging: Staging,
    *,
    url: str,
    token: str,
    key: str,
    file_name: str,
    declared_size: int | None = None,
    settings: SourceSettings | None = None,
) -> StagedFile:
    """Download a Slack file (`url_private_download`) into staging under `key`.

    `declared_size` is the `size` of Slack's file object, checked against the cap before any byte
    is read; the cap is enforced while streaming whatever it says.
    """
    settings = settings or SourceSettings()
    if declared_size is not None and declared_size > settings.max_bytes:
        raise _too_large(file_name, settings.max_bytes, stopped=False)
    try:
        current = _slack_url(httpx.URL(url), settings, redirected=False)
    except httpx.InvalidURL:
        raise SourceError(
            "not_allowed", "The file link is not a valid web address. Share the CSV file itself in the channel."
        ) from None
    # identity: the cap and Content-Length then count the bytes stored, and no small compressed
    # chunk can inflate into a large one in memory.
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
    for _ in range(settings.max_redirects + 1):
        host = current.host
        try:
            with http.stream("GET", current, headers=headers, follow_redirects=False) as response:
                if response.is_redirect:
                    # Followed by hand so the token only ever goes to an allowed host.
                    try:
                        target = current.join(response.headers["location"])
                    except httpx.InvalidURL:
                        raise SourceError(
                            "not_allowed",
                            f"Slack redirected the download of {file_name} to an invalid address. Share the file again.",
                        ) from None
                    current = _slack_url(target, settings, redirected=True)
                    log.info("Slack file download redirected to %s", current.host)
                    continue
                _check_slack_status(response.status_code, host)
                media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if media_type == "text/html":
                    raise _login_page(file_name)
                length = response.headers.get("content-length", "")
                if length.isdigit() and "content-encoding" not in response.headers and int(length) > settings.max_bytes:
                    raise _too_large(file_name, settings.max_bytes, stopped=False)
                head, rest = _sniffed(response.iter_bytes(CHUNK_SIZE))
                if _is_html(head):
                    raise _login_page(file_name)
                stored = staging.put(key, _capped(_chain(head, rest), settings.max_bytes, file_name))
        except httpx.HTTPError as exc:  # connection refused, timeout, dropped mid-download
            log.warning("Slack file download from %s failed: %s", host, type(exc).__name__)
            raise SourceError(
                "unreachable",
                f"Could not download {file_name} from Slack ({host}): {_describe(exc)}. Try again in a few minutes.",
            ) from None
        log.info("staged Slack file from %s as %s: %d bytes", host, key, stored.size)
        return StagedFile(key=stored.key, size=stored.size, sha256=stored.sha256, file_name=file_name)
    raise SourceError(
        "unreachable",
        f"Slack redirected the download of {file_name} more than {settings.max_redirects} times. Try again in a few minutes.",
    )


def _chain(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if head:
        yield head
    yield from rest


def _describe(exc: httpx.HTTPError) -> str:
    # httpx messages name the URL at most, never headers; still, keep to the kind of failure.
    if isinstance(exc, httpx.TimeoutException):
        return "it took too long to answer"
    if isinstance(exc, httpx.ConnectError):
        return "could not connect"
    return "the connection failed"


def _check_slack_status(status: int, host: str) -> None:
    if 200 <= status < 300:
        return
    if status in (401, 403):
        raise SourceError(
            "no_access", f"Slack refused the download ({status}): the bot cannot read this file. {_NO_ACCESS_HINT}"
        )
    if status in (404, 410):
        raise SourceError(
            "not_found", "Slack says the file no longer exists (deleted, or the link expired). Share the file again."
        )
    raise SourceError("unreachable", f"Slack's file host ({host}) answered {status}. Try again in a few minutes.")


# --- S3 ------------------------------------------------------------------------------------------

_S3_FORMAT_HINT = "Name the file as s3://bucket/folder/file.csv."


def _split_s3_uri(uri: str) -> tuple[str, str]:
    rest = uri.strip()
    if not rest.lower().startswith("s3://"):
        raise SourceError("not_allowed", f"{uri!r} is not an S3 address. {_S3_FORMAT_HINT}")
    bucket, _, key = rest[5:].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise SourceError("not_allowed", f"{uri!r} does not name a valid bucket. {_S3_FORMAT_HINT}")
    return bucket, key


def _normalize_key(key: str) -> str:
    """Collapse `//` and `.`, resolve `..`; refuse what would climb above the bucket or hide a path."""
    if _CONTROL_OR_BACKSLASH.search(key):
        raise SourceError(
            "not_allowed", f"The S3 path {key!r} contains a backslash or a control character. {_S3_FORMAT_HINT}"
        )
    parts: list[str] = []
    for segment in key.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not parts:
                raise SourceError(
                    "not_allowed", f"The S3 path {key!r} climbs above the bucket with '..'. {_S3_FORMAT_HINT}"
                )
            parts.pop()
        else:
            parts.append(segment)
    return "/".join(parts)


def parse_s3_uri(uri: str) -> S3Location:
    """`s3://bucket/key` with the key normalised; SourceError(not_allowed) when it is not one."""
    bucket, raw_key = _split_s3_uri(uri)
    key = _normalize_key(raw_key)
    if not key:
        raise SourceError("not_allowed", f"{uri!r} names a bucket, not a file. {_S3_FORMAT_HINT}")
    return S3Location(bucket=bucket, key=key)


def check_s3_allowed(uri: str, allowed: Sequence[S3Prefix]) -> S3Location:
    """The object `uri` names, if it lies inside one of the `allowed` prefixes (after normalising)."""
    location = parse_s3_uri(uri)
    if not allowed:
        raise SourceError(
            "not_allowed",
            "Reading files from S3 is not enabled: no bucket or folder is allowed. Share the CSV in Slack "
            "instead, or ask an admin to add its folder to TABLEBOT_S3_ALLOWED_PREFIXES.",
        )
    if not any(prefix.contains(location) for prefix in allowed):
        raise SourceError(
            "not_allowed",
            f"The bot only reads files under {', '.join(p.uri for p in allowed)}; {location.uri} is outside. "
            "Copy the file into one of those folders, or ask an admin to allow its folder.",
        )
    return location


def _s3_error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _s3_failure(exc: ClientError | BotoCoreError, location: S3Location) -> SourceError:
    if isinstance(exc, ClientError):
        code = _s3_error_code(exc)
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            return SourceError(
                "not_found",
                f"There is no file at {location.uri}. Check the bucket and the path (S3 names are case-sensitive).",
            )
        if code in ("403", "AccessDenied", "Forbidden", "AllAccessDisabled", "KMS.AccessDeniedException"):
            return SourceError(
                "no_access",
                f"The bot is not allowed to read {location.uri} (access denied). Ask an admin to grant the bot's "
                "role s3:GetObject on that folder (and kms:Decrypt if the bucket uses its own KMS key).",
            )
        if code in ("412", "PreconditionFailed"):
            return SourceError("unreachable", f"{location.uri} changed while the bot was reading it. Try again.")
        detail = f"S3 answered {code or 'an error'}"
    else:
        detail = f"S3 could not be reached ({type(exc).__name__})"
    return SourceError("unreachable", f"Could not read {location.uri}: {detail}. Try again in a few minutes.")


def stage_s3_object(
    s3_client: S3Client,
    staging: Staging,
    *,
    uri: str,
    key: str,
    settings: SourceSettings | None = None,
) -> StagedFile:
    """Copy the S3 object `uri` into staging under `key`, if the allow-list permits it."""
    settings = settings or SourceSettings()
    location = check_s3_allowed(uri, settings.s3_allowed_prefixes)
    file_name = location.key.rsplit("/", 1)[-1]
    try:
        head = s3_client.head_object(Bucket=location.bucket, Key=location.key)
    except (ClientError, BotoCoreError) as exc:
        raise _s3_failure(exc, location) from None
    if head.get("ContentLength", 0) > settings.max_bytes:
        raise _too_large(file_name, settings.max_bytes, stopped=False)
    try:
        # Read exactly the object whose size was checked, not one replaced since.
        extra: dict[str, Any] = {"IfMatch": head["ETag"]} if head.get("ETag") else {}
        body = s3_client.get_object(Bucket=location.bucket, Key=location.key, **extra)["Body"]
        try:
            stored = staging.put(key, _capped(body.iter_chunks(CHUNK_SIZE), settings.max_bytes, file_name))
        finally:
            body.close()
    except (ClientError, BotoCoreError) as exc:
        raise _s3_failure(exc, location) from None
    log.info("staged %s as %s: %d bytes", location.uri, key, stored.size)
    return StagedFile(key=stored.key, size=stored.size, sha256=stored.sha256, file_name=file_name)
