"""Scheduled runs: cron jobs, persisted with APScheduler's SQLAlchemy job store in
`<workspace>/.agentx/schedules.sqlite`, so a restart of `agentx serve` keeps them.

A firing does not train: it queues a `run` request (source `schedule`) for the workspace's
worker, which `agentx serve` runs beside the scheduler; the run's `--until` is read when the
worker starts it, so a 01:00 job with `until = "06:30"` stops starting work at 06:30.

Missed runs (the machine was off or `agentx serve` was not running at the firing time):
- a firing missed by less than the job's grace time (`--misfire-grace`, default 60 minutes)
  runs as soon as the scheduler is back;
- several missed firings of one job coalesce into that one run;
- a firing missed by more than the grace time is skipped and logged as a `schedule_missed`
  KB event (the report and `agentx schedule list` show it); the job's next firing stands.

`agentx schedule add|list|remove` edit the same store from any process; the scheduler in
`agentx serve` looks at the store every `POLL_S` seconds, so a job added while it runs is
picked up without a restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from agentx.app import RunOptions
from agentx.errors import UserError
from agentx.paths import state_dir

POLL_S = 10
JOB_FUNC = "agentx.schedule:fire"


@dataclass(frozen=True)
class Schedule:
    id: str
    cron: str
    options: RunOptions
    next_run: dt.datetime | None
    grace_minutes: float


def store_url(workspace: Path) -> str:
    folder = state_dir(Path(workspace).resolve())
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'schedules.sqlite'}"


def trigger(cron: str):
    from apscheduler.triggers.cron import CronTrigger

    try:
        return CronTrigger.from_crontab(cron)
    except ValueError as exc:
        raise UserError(f"--cron wants five fields 'minute hour day month weekday' (e.g. \"0 1 * * *\" for "
                        f"01:00 every day); {cron!r}: {exc}") from None


def scheduler(workspace: Path):
    """An APScheduler over the workspace's job store (not started). `start(paused=True)` only
    edits the store: a paused or stopping one never fires a job."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.base import STATE_RUNNING

    class Scheduler(BackgroundScheduler):
        def _process_jobs(self):
            # APScheduler 3 processes due jobs once more while shutting down, when its executors
            # are already gone: the submission fails and the firing is lost. Only a running one fires.
            return super()._process_jobs() if self.state == STATE_RUNNING else None

    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return Scheduler(jobstores={"default": SQLAlchemyJobStore(url=store_url(workspace))},
                     job_defaults={"coalesce": True, "max_instances": 1})


def add(workspace: Path, cron: str, options: RunOptions, *, grace_minutes: float = 60) -> Schedule:
    from agentx.workspace import load_manifest

    load_manifest(workspace)                  # a schedule for a folder that is no workspace: say so now
    job_trigger = trigger(cron)
    sched = scheduler(workspace)
    sched.start(paused=True)
    try:
        job = sched.add_job(JOB_FUNC, job_trigger, args=[str(Path(workspace).resolve()), options.model_dump(), cron],
                            id=f"s-{uuid.uuid4().hex[:8]}", name=cron, misfire_grace_time=int(grace_minutes * 60),
                            replace_existing=False)
        return _schedule(job)
    finally:
        sched.shutdown(wait=False)


def listing(workspace: Path) -> list[Schedule]:
    sched = scheduler(workspace)
    sched.start(paused=True)
    try:
        return [_schedule(job) for job in sched.get_jobs()]
    finally:
        sched.shutdown(wait=False)


def remove(workspace: Path, schedule_id: str) -> None:
    from apscheduler.jobstores.base import JobLookupError

    sched = scheduler(workspace)
    sched.start(paused=True)
    try:
        sched.remove_job(schedule_id)
    except JobLookupError:
        known = ", ".join(j.id for j in sched.get_jobs()) or "none"
        raise UserError(f"no schedule {schedule_id!r} (schedules: {known}); `agentx schedule list` shows them") from None
    finally:
        sched.shutdown(wait=False)


def _schedule(job) -> Schedule:
    _, options, cron = job.args
    next_run = getattr(job, "next_run_time", None)
    if next_run is None and hasattr(job, "trigger"):
        next_run = job.trigger.get_next_fire_time(None, dt.datetime.now(dt.UTC).astimezone())
    return Schedule(job.id, cron, RunOptions(**options), next_run, (job.misfire_grace_time or 0) / 60)


def fire(workspace: str, options: dict, cron: str) -> int:
    """A firing: queue the run for the workspace's worker; returns the request id."""
    from knowledge import KnowledgeBase
    from knowledge.queue import RequestQueue

    kb = KnowledgeBase.for_workspace(workspace)
    request_id = RequestQueue(kb).submit("run", RunOptions(**options).model_dump(), source="schedule")
    kb.log_event("schedule_fired", {"cron": cron, "request": request_id})
    return request_id


def start(workspace: Path, say=lambda _: None):
    """The running scheduler of `agentx serve`: fires due jobs, re-reads the store every POLL_S
    seconds (jobs other processes added), logs skipped firings."""
    from apscheduler.events import EVENT_JOB_MISSED
    from apscheduler.jobstores.memory import MemoryJobStore

    from knowledge import KnowledgeBase

    sched = scheduler(workspace)
    sched.add_jobstore(MemoryJobStore(), "poll")

    kb = KnowledgeBase.for_workspace(workspace)

    def missed(event) -> None:
        kb.log_event("schedule_missed", {"schedule": event.job_id,
                                         "scheduled_for": event.scheduled_run_time.isoformat()})
        say(f"schedule {event.job_id}: the firing of {event.scheduled_run_time:%Y-%m-%d %H:%M} was missed by more "
            "than its grace time; skipped")

    sched.add_listener(missed, EVENT_JOB_MISSED)
    sched.start()
    sched.add_job(sched.wakeup, "interval", seconds=POLL_S, id="agentx-poll", jobstore="poll")
    return sched
