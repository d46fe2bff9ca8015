"""Alerts: one function, `notify(level, message, context)`, for everything that should reach a person.

Always: one structured (JSON) log line on the `precision_marketing.reporting.alerts` logger, which lands in the
task log. Then every channel whose Airflow connection exists (Admin -> Connections, an `AIRFLOW_CONN_<ID>`
variable or a secrets backend; config `alerts.*`), sent by the providers' notifiers:

  alerts.slack_connection   (pm_alerts_slack) a Slack incoming webhook: SlackWebhookNotifier
  alerts.smtp_connection    (pm_alerts_smtp)  an SMTP server: SmtpNotifier to alerts.email_to; certificates are
                              verified (the provider's default context), and the connection's login is refused
                              when its extras disable both TLS and SSL
  alerts.min_level          lowest level sent to the channels: info | warning (default) | error

This module only chooses the notifiers: the connections carry the endpoints and secrets (a secrets backend, the UI's
masked fields), so nothing of them is in a config file or a log line. The DAG's failure callback
(`on_task_failure`) calls it with level "error"; the ALS publish gate and the consent guard with "warning"/"error".
A channel that fails is logged and reported in the return value, never raised: an alert must not hide the
failure it reports.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("precision_marketing.reporting.alerts")

LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
TIMEOUT_SECONDS = 10


def _text(level: str, message: str, context: Mapping[str, Any]) -> str:
    head = f"[{level.upper()}] {context.get('dag_id', 'precision-marketing')}"
    if context.get("ds"):
        head += f" ds={context['ds']}"
    details = "\n".join(f"{key}: {value}" for key, value in context.items() if key not in ("dag_id", "ds"))
    return f"{head}: {message}" + (f"\n{details}" if details else "")


def _connection_channels(settings: Mapping[str, Any], level: str, message: str, context: Mapping[str, Any]) -> list:
    """(name, send) of the channels whose Airflow connection exists, sent by the providers' notifiers."""
    from precision_marketing.config.connections import airflow_connection

    text = _text(level, message, context)
    channels = []
    slack = airflow_connection(settings.get("slack_connection"))
    if slack is not None:

        def send_slack():
            from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

            SlackWebhookNotifier(slack_webhook_conn_id=slack.conn_id, text=text, timeout=TIMEOUT_SECONDS).notify(
                dict(context)
            )

        channels.append(("slack", send_slack))
    smtp = airflow_connection(settings.get("smtp_connection"))
    if smtp is not None:

        def send_email():
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            extra = smtp.extra_dejson
            plain = (
                str(extra.get("disable_tls", False)).lower() == "true"
                and str(extra.get("disable_ssl", False)).lower() == "true"
            )
            if smtp.login and plain:
                raise ValueError(
                    f"refusing to send the SMTP password without TLS: connection {smtp.conn_id!r} disables both "
                    "TLS and SSL"
                )
            if not settings.get("email_to"):
                raise ValueError(f"connection {smtp.conn_id!r} is defined but alerts.email_to names no recipient")
            SmtpNotifier(
                from_email=extra.get("from_email") or "pm-alerts@localhost",
                to=list(settings["email_to"]),
                subject=text.splitlines()[0][:200],
                html_content=f"<pre>{html.escape(text)}</pre>",
                smtp_conn_id=smtp.conn_id,
            ).notify(dict(context))

        channels.append(("email", send_email))
    return channels


def notify(
    level: str, message: str, context: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Report `message` at `level` (info | warning | error); context: dag_id, ds, run_id, task_id, ...
    `settings`: the `alerts` section (default: the platform configuration's).

    Returns what happened per channel, e.g. {"log": "sent", "slack": "sent", "email": "error: ..."}."""
    if level not in LEVELS:
        raise ValueError(f"alert level must be one of {sorted(LEVELS)}, got {level!r}")
    context = dict(context or {})
    log.log(LEVELS[level], json.dumps({"alert": level, "message": message, **context}, default=str))
    outcome = {"log": "sent"}
    if settings is None:
        from precision_marketing.config import load_config

        try:
            settings = load_config()["alerts"]
        except Exception as exc:  # noqa: BLE001 - a broken configuration must not hide the failure being reported
            log.error("alert channels unknown, the configuration does not load: %s", exc)
            return {**outcome, "connections": f"error: {exc}"}
    if LEVELS[level] < LEVELS[settings.get("min_level", "warning")]:
        return outcome
    try:
        channels = _connection_channels(settings, level, message, context)
    except Exception as exc:  # noqa: BLE001 - a connection lookup that fails is reported like a dead channel
        log.error("alert connections could not be read: %s", exc)
        return {**outcome, "connections": f"error: {exc}"}
    for name, send in channels:
        try:
            send()
            outcome[name] = "sent"
        except Exception as exc:  # noqa: BLE001 - any delivery problem is reported, never raised
            log.error("alert channel %s failed: %s", name, exc)
            outcome[name] = f"error: {exc}"
    return outcome
