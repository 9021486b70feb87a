"""Outcome webhooks to the AI's receiver: the outbox contract, Standard Webhooks signing and
delivery."""
