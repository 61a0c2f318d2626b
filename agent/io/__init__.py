"""Adapters at the edge: CAN buses and log files, MQTT, the SQLite outbox, systemd (IO)."""
