"""carfriend's vehicle simulator: the reference EV (dbc/carfriend_ev.dbc) on any python-can bus.

In-process use (what ``carfriend run --simulate`` and ``carfriend demo`` need)::

    import can, simulators

    simulators.list_scenarios()                # {"demo-day": "Demo: ...", ...}
    bus = simulators.open_bus("virtual", "carfriend")   # keeps simulated timestamps
    sim = simulators.Simulator(bus, "demo-day", speed=600, seed=0).start()
    sim.wait()                                 # True once the scenario has ended
    sim.stop(); bus.shutdown()

    # or blocking, with your own stop event:
    simulators.run_live(bus, "overnight-charge", speed=1000, seed=0, stop_event=event)

    # or as fast as possible into a candump .log / .asc / .blf (same seed, same bytes):
    simulators.write_log("/tmp/x.log", "overnight-charge", seed=0, speed=1000)

    # or the frames themselves:
    for msg in simulators.frames("fault-dtc", speed=1000): ...

Scenario problems raise ``agent.errors.ConfigError`` naming the file and field.
See docs/simulator.md.
"""

from simulators.engine import Simulation
from simulators.output import RunStats, Simulator, frames, open_bus, run_live, write_log
from simulators.scenario import Scenario, list_scenarios, load_scenario
from simulators.slcan_pty import SlcanPtyBus

__all__ = [
    "RunStats",
    "Scenario",
    "Simulation",
    "Simulator",
    "SlcanPtyBus",
    "frames",
    "list_scenarios",
    "load_scenario",
    "open_bus",
    "run_live",
    "write_log",
]
