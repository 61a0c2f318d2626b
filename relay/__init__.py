"""carfriend relay: the cloud side where people read what their cars say and answer them.

MQTT ingest (persistent subscriptions, every payload checked by a strict model, acknowledged
after the database commit or the drop counted) feeds a database
(SQLite by default, PostgreSQL by DSN); a small server-rendered web app shows each vehicle's
timeline live and sends the owner's answers back as signed commands.
"""
