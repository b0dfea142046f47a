"""Alert delivery adapters (DESIGN §5, Alerts)."""

from infra.alerts.webhook import SIGNATURE_HEADER, WebhookAlerts, is_slack_url, sign, slack_text

__all__ = ["SIGNATURE_HEADER", "WebhookAlerts", "is_slack_url", "sign", "slack_text"]
