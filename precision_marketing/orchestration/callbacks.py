"""Task callbacks: the failure alert and the per-task timing records the run report reads."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from precision_marketing.config import load_config
from precision_marketing.orchestration.schedule import context_ds


def _task_context(context) -> dict[str, Any]:
    ti = context["ti"]
    return {
        "dag_id": ti.dag_id,
        "ds": context_ds(context),
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "try_number": ti.try_number,
        "log_url": getattr(ti, "log_url", None),
    }


def record_task_time(context, state: str | None = None, error: str | None = None, reason: str | None = None) -> None:
    """One JSON per task and ds in the work dir: the run report's "time per task" reads them."""
    from precision_marketing.pipeline import paths_for

    ti = context["ti"]
    ds = context_ds(context)
    started = ti.start_date
    ended = ti.end_date or dt.datetime.now(dt.UTC)
    record = {
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "try_number": ti.try_number,
        "state": state or str(getattr(ti, "state", "") or ""),
        "start": started.isoformat() if started else None,
        "end": ended.isoformat(),
        "seconds": round((ended - started).total_seconds(), 3) if started else None,
    }
    if error:
        record["error"] = error
    if reason:
        record["reason"] = reason
    target = paths_for(load_config(), ds).task_time(ti.task_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(target)


def _record_quietly(context, state: str, reason: str | None = None) -> None:
    try:
        record_task_time(context, state, reason=reason)
    except Exception as exc:  # noqa: BLE001 - bookkeeping must never fail a task that ended well
        context["ti"].log.warning("could not record the task's timing: %s", exc)


def on_task_success(context) -> None:
    _record_quietly(context, "success")


def on_task_skipped(context) -> None:
    """A step that skipped itself (e.g. audiences without their sources): shown as skipped by `pm run`."""
    _record_quietly(context, "skipped", reason=context.get("skip_reason"))


def on_task_failure(context) -> None:
    """Final failure of a task (after its retries): alert, and record its timing."""
    from precision_marketing.reporting.alerts import notify

    error = context.get("exception")
    text = str(error).strip() if error else ""
    summary = (text.splitlines() or ["no exception recorded"])[0][:500]
    notify("error", f"task {context['ti'].task_id} failed: {summary}", _task_context(context))
    try:
        record_task_time(context, "failed", error=text[:4000] or type(error).__name__)
    except Exception:  # noqa: BLE001
        pass
