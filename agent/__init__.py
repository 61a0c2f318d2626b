"""carfriend agent: reads the CAN bus, decodes it to COVESA VSS, and lets the car talk."""

__version__ = "0.1.0"
