"""Alerts: one function, `notify(level, message, context)`, for everything that should reach a person.

Always: one structured (JSON) log line on the `precision_marketing.reporting.alerts` logger, which lands in the
task log. Then every channel whose Airflow connection exists (config `alerts.*`; config/connections.py), sent by
the providers' notifiers:

  alerts.slack_connection   (pm_alerts_slack) a Slack incoming webhook: SlackWebhookNotifier
  alerts.smtp_connection    (pm_alerts_smtp)  an SMTP server: SmtpNotifier to alerts.email_to; the connection's
                              login is only sent over TLS (refused when its extras disable both TLS and SSL)

The connections carry the secrets (a secrets backend, the UI's masked fields), so nothing of them is in a config
file or a log line. The older environment variables still work beside them:

  PM_ALERT_WEBHOOK_URL      POST a Slack-compatible JSON body ({"text": ...}) to this URL
  PM_ALERT_SMTP_HOST        send an e-mail through this SMTP server, with
  PM_ALERT_SMTP_PORT          (default 25; 465 = implicit TLS)
  PM_ALERT_SMTP_STARTTLS      true = upgrade the connection with STARTTLS (default false)
  PM_ALERT_SMTP_USER / PM_ALERT_SMTP_PASSWORD   optional login, only over TLS (465 or STARTTLS)
  PM_ALERT_SMTP_FROM        sender (default pm-alerts@localhost)
  PM_ALERT_SMTP_TO          comma-separated recipients (required for e-mail)
  PM_ALERT_MIN_LEVEL        lowest level sent to the webhook / e-mail: info | warning | error (default warning)

The DAG's failure callback (`on_task_failure`) calls it with level "error"; the ALS publish gate calls
it with "warning" when the chosen model does not beat popularity. A channel that fails is logged and
reported in the return value, never raised: an alert must not hide the failure it reports.
TLS always verifies the server's certificate (the system's CA store); the webhook URL's path and query (where
Slack-style hooks keep their token) never reach a log line or an error message.
"""

from __future__ import annotations

import html
import json
import logging
import os
import smtplib
import ssl
import urllib.parse
import urllib.request
from collections.abc import Mapping
from email.message import EmailMessage
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


def shown_url(url: str) -> str:
    """The URL as logs may show it: scheme and host only (a webhook's path and query are its secret)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/***" if parts.scheme and parts.hostname else "(the configured URL)"


def _send_webhook(url: str, level: str, message: str, context: Mapping[str, Any]) -> None:
    if urllib.parse.urlsplit(url).scheme not in ("https", "http"):
        raise ValueError("PM_ALERT_WEBHOOK_URL must start with https:// (the value is not shown: it holds a token)")
    # Slack, Mattermost, Rocket.Chat and Teams' Slack-compatible hooks all read "text"
    body = json.dumps(
        {"text": _text(level, message, context), "level": level, "message": message, "context": dict(context)},
        default=str,
    ).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        response.read()


def _send_email(environ: Mapping[str, str], level: str, message: str, context: Mapping[str, Any]) -> None:
    recipients = [r.strip() for r in environ.get("PM_ALERT_SMTP_TO", "").split(",") if r.strip()]
    if not recipients:
        raise ValueError("PM_ALERT_SMTP_HOST is set but PM_ALERT_SMTP_TO names no recipient")
    email = EmailMessage()
    email["Subject"] = _text(level, message, context).splitlines()[0][:200]
    email["From"] = environ.get("PM_ALERT_SMTP_FROM", "pm-alerts@localhost")
    email["To"] = ", ".join(recipients)
    email.set_content(_text(level, message, context))
    port = int(environ.get("PM_ALERT_SMTP_PORT", "25"))
    starttls = environ.get("PM_ALERT_SMTP_STARTTLS", "false").lower() in ("1", "true", "yes")
    if environ.get("PM_ALERT_SMTP_USER") and not (port == 465 or starttls):
        raise ValueError(
            "refusing to send the SMTP password without TLS: set PM_ALERT_SMTP_STARTTLS=true or PM_ALERT_SMTP_PORT=465"
        )
    tls = ssl.create_default_context()  # verifies the certificate and the host name
    host = environ["PM_ALERT_SMTP_HOST"]
    if port == 465:
        smtp_connection = smtplib.SMTP_SSL(host, port, timeout=TIMEOUT_SECONDS, context=tls)
    else:
        smtp_connection = smtplib.SMTP(host, port, timeout=TIMEOUT_SECONDS)
    with smtp_connection as smtp:
        if starttls:
            smtp.starttls(context=tls)
        if environ.get("PM_ALERT_SMTP_USER"):
            smtp.login(environ["PM_ALERT_SMTP_USER"], environ.get("PM_ALERT_SMTP_PASSWORD", ""))
        smtp.send_message(email)


def _connection_channels(settings: Mapping[str, Any], level: str, message: str, context: Mapping[str, Any]) -> list:
    """(name, send) of the channels whose Airflow connection exists, sent by the providers' notifiers."""
    from precision_marketing.config.connections import airflow_connection

    text = _text(level, message, context)
    channels = []
    slack = airflow_connection(settings.get("slack_connection"))
    if slack is not None:

        def send_slack():
            from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

            SlackWebhookNotifier(slack_webhook_conn_id=slack.conn_id, text=text).notify(dict(context))

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
    level: str,
    message: str,
    context: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Report `message` at `level` (info | warning | error); context: dag_id, ds, run_id, task_id, ...
    `settings`: the `alerts` section (default: the platform configuration's).

    Returns what happened per channel, e.g. {"log": "sent", "slack": "sent", "email": "error: ..."}."""
    if level not in LEVELS:
        raise ValueError(f"alert level must be one of {sorted(LEVELS)}, got {level!r}")
    environ = os.environ if environ is None else environ
    context = dict(context or {})
    log.log(LEVELS[level], json.dumps({"alert": level, "message": message, **context}, default=str))
    outcome = {"log": "sent"}

    min_level = environ.get("PM_ALERT_MIN_LEVEL", "warning").lower()
    if LEVELS[level] < LEVELS.get(min_level, logging.WARNING):
        return outcome
    if settings is None:
        from precision_marketing.config import load_config

        settings = load_config()["alerts"]
    try:
        channels = _connection_channels(settings, level, message, context)
    except Exception as exc:  # noqa: BLE001 - a connection lookup that fails is reported like a dead channel
        log.error("alert connections could not be read: %s", exc)
        channels, outcome["connections"] = [], f"error: {exc}"
    if environ.get("PM_ALERT_WEBHOOK_URL"):
        channels.append(("webhook", lambda: _send_webhook(environ["PM_ALERT_WEBHOOK_URL"], level, message, context)))
    if environ.get("PM_ALERT_SMTP_HOST"):
        channels.append(("email", lambda: _send_email(environ, level, message, context)))
    for name, send in channels:
        try:
            send()
            outcome[name] = "sent"
        except Exception as exc:  # noqa: BLE001 - any delivery problem is reported, never raised
            problem = str(exc)
            url = environ.get("PM_ALERT_WEBHOOK_URL", "")
            if url:  # urllib's errors quote the URL: its token never reaches the log
                problem = problem.replace(url, shown_url(url))
                problem = problem.replace(url.split("://", 1)[-1], shown_url(url))
            log.error("alert channel %s failed: %s", name, problem)
            outcome[name] = f"error: {problem}"
    return outcome
