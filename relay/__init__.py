"""carfriend relay: the cloud side where people read what their cars say and answer them.

MQTT ingest (shared subscriptions, acknowledged after the database commit) feeds a database
(SQLite by default, PostgreSQL by DSN); a small server-rendered web app shows each vehicle's
timeline live and sends the owner's answers back as signed commands.
"""
