"""Notifications from the relay: Web Push and Apprise channels, a durable outbox in the database,
delivered at least once per (message, user, channel) by a worker thread (docs/relay.md)."""
