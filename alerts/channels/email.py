"""E-mail over SMTP: one plain-text message per notification, with the runbook and dashboard
links always in the body. STARTTLS is required by default (``require_tls``) and the password
is sent only over TLS. The Message-ID holds the notification's id, so a mail system that sees
a repeat (after a crash mid-send) can drop it.

Failures say whether a retry can help: 4xx replies, dropped connections and timeouts are
retried; 5xx replies (a refused login, an unknown recipient), a server without STARTTLS when
it is required, and a certificate that does not verify are permanent.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from lorawatch.alerts.channels import DeliveryError, fmt_value, links, title, user_text
from lorawatch.settings import EmailReceiver, Settings


def message(payload: dict[str, Any], receiver: EmailReceiver) -> EmailMessage:
    """The e-mail for one notification."""
    note_id = payload.get("lorawatch", {}).get("notificationId", "0")
    mail = EmailMessage()
    mail["Subject"] = (user_text(receiver, "title", payload) or title(payload)).replace("\n", " ")
    mail["From"] = receiver.from_
    mail["To"] = ", ".join(receiver.to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = f"<lorawatch-{note_id}@{receiver.from_.rpartition('@')[2] or 'lorawatch'}>"
    mail["X-LoraWatch-Notification-Id"] = str(note_id)
    body = user_text(receiver, "text", payload)
    if body is None:
        lines = []
        for alert in payload["alerts"]:
            labels = alert["labels"]
            lines.append(
                f"[{alert['status'].upper()}] {alert['annotations'].get('summary') or labels.get('alertname')}"
            )
            lines += [f"  {k}: {v}" for k, v in sorted(labels.items())]
            lines.append(f"  value: {fmt_value(alert.get('value'))}  threshold: {fmt_value(alert.get('threshold'))}")
            lines.append("")
        body = "\n".join(lines)
    mail.set_content(body.rstrip() + "\n\n" + "\n".join(f"{name}: {link}" for name, link in links(payload)) + "\n")
    return mail


def _reply_error(code: int, text: Any, what: str) -> DeliveryError:
    reply = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return DeliveryError(f"SMTP {code} {what}: {reply}", permanent=500 <= code < 600)


def send(payload: dict[str, Any], receiver: EmailReceiver, settings: Settings) -> None:
    """Deliver one notification; raises DeliveryError (retryable or permanent)."""
    mail = message(payload, receiver)
    host, _, port = receiver.smarthost.rpartition(":")
    context = (
        ssl.create_default_context(cafile=receiver.tls_ca_file)
        if receiver.tls_ca_file
        else ssl.create_default_context()
    )
    password = receiver.auth_password.resolve() if receiver.auth_password else None
    try:
        with smtplib.SMTP(host, int(port), timeout=receiver.timeout_s) as smtp:
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
            elif receiver.require_tls:
                raise DeliveryError("the SMTP server does not offer STARTTLS (require_tls = true)", permanent=True)
            if receiver.auth_username:
                if password is None:
                    raise DeliveryError("auth_username is set without auth_password", permanent=True)
                smtp.login(receiver.auth_username, password)
            smtp.send_message(mail)
    except DeliveryError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise _reply_error(exc.smtp_code, exc.smtp_error, "login refused") from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise DeliveryError(
            f"SMTP recipients refused: {', '.join(map(str, codes))}", permanent=all(500 <= c < 600 for c in codes)
        ) from None
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError, smtplib.SMTPHeloError) as exc:
        raise _reply_error(exc.smtp_code, exc.smtp_error, "refused") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"SMTP: {exc}", permanent=True) from None
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(
            f"the SMTP server's certificate does not verify: {exc.verify_message}", permanent=True
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP {type(exc).__name__}: {exc}") from None
