"""Use cases behind the scheduled poller: carry queued and submitted jobs to their ending, once.

`JobService.process(job)` does one step of one due job under its lease; `bot.poller` calls it
for every due job, many times a minute. The steps live in one module each:

- `worker`: a worker's parts, pacing (`PollSettings`), clock, and the guard around a step;
- `due`: which jobs are the poller's (its states, the front-end jobs it watches);
- `parts`: part statuses and what they decide;
- `gate`: the table gate's key and spacing;
- `sending`: sending through the gate, an interrupted send, a part's failure;
- `checking`: status checks, backoff, timeout;
- `notices`: endings and their exactly-once notice (the protocol is in its docstring);
- `left_behind`: front-end jobs whose intake died or whose approval ran out;
- `retry`: Retry, for the Slack front end (a restore is an upload through the intake);
- `job_service`: `JobService`, which picks the step a job needs.
"""

from bot.errors import NoticeFailed
from bot.service.due import (
    INTAKE_STATES,
    POLLER_DUE_STATES,
    POLLER_STATES,
    WATCHED_STATES,
    intake_stranded,
    is_poller_work,
)
from bot.service.job_service import JobService
from bot.service.notices import ENDING_EVENT_TYPE, TARGET_LABELS, Ending, Notifier, ending_metadata
from bot.service.parts import (
    DONE,
    FAILED,
    NO_JOB_ID,
    REFUSED,
    RUNNING,
    SENDING,
    UNKNOWN,
    applied_note,
    decided_ending,
)
from bot.service.worker import PollSettings, Step, TargetClientFor

__all__ = [
    "DONE",
    "ENDING_EVENT_TYPE",
    "FAILED",
    "INTAKE_STATES",
    "NO_JOB_ID",
    "POLLER_DUE_STATES",
    "POLLER_STATES",
    "REFUSED",
    "RUNNING",
    "SENDING",
    "TARGET_LABELS",
    "UNKNOWN",
    "WATCHED_STATES",
    "Ending",
    "JobService",
    "NoticeFailed",
    "Notifier",
    "PollSettings",
    "Step",
    "TargetClientFor",
    "applied_note",
    "decided_ending",
    "ending_metadata",
    "intake_stranded",
    "is_poller_work",
]
