"""Outcome webhooks to the AI's receiver and alerts to the operator's: the outbox contract, Standard
Webhooks signing, delivery and the alerts' bodies."""
