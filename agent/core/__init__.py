"""The pure core: frames -> decode -> state -> rules -> persona -> voice gate (no IO).

Nothing here opens a socket, a file (but the shipped catalogs), a thread or SQLite, or reads the
clock: time is passed in, so a replayed log always gives the same messages.
"""
