"""Remote commands: the signed protocol and safety interlock (no IO), and running them on the bus (IO)."""
