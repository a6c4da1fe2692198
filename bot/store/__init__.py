"""The job store: where the bot keeps its jobs, their history and the per-table upload gates.

`JobStore` is the interface; `DynamoJobStore` (production) and `SqliteJobStore` (local runs, the
demo) implement it and pass the same contract tests. The allowed state changes are in `states`.
"""

from bot.errors import (
    DamagedRecord,
    InvalidTransition,
    JobConflict,
    JobNotFound,
    LeaseHeld,
    StoreError,
    StoreUnavailable,
)
from bot.store.dynamodb import DynamoJobStore, create_table, load_table_definition
from bot.store.model import (
    Clock,
    DueJobs,
    GateDecision,
    HistoryEntry,
    Job,
    JobChanges,
    NewJob,
    TableGate,
    UpstreamPart,
)
from bot.store.protocol import JobStore
from bot.store.rules import DEFAULT_RETENTION, UNSET, NextCheck
from bot.store.sqlite import SqliteJobStore
from bot.store.states import ALLOWED_TRANSITIONS, TERMINAL_STATES, JobState, is_terminal

__all__ = [
    "ALLOWED_TRANSITIONS",
    "DEFAULT_RETENTION",
    "TERMINAL_STATES",
    "UNSET",
    "Clock",
    "DamagedRecord",
    "DueJobs",
    "DynamoJobStore",
    "GateDecision",
    "HistoryEntry",
    "InvalidTransition",
    "Job",
    "JobChanges",
    "JobConflict",
    "JobNotFound",
    "JobState",
    "JobStore",
    "LeaseHeld",
    "NewJob",
    "NextCheck",
    "SqliteJobStore",
    "StoreError",
    "StoreUnavailable",
    "TableGate",
    "UpstreamPart",
    "create_table",
    "is_terminal",
    "load_table_definition",
]
