"""COVESA VSS paths the agent knows, with their plausible ranges and kinds (no IO)."""

from __future__ import annotations

from typing import Final

TB: Final = "Vehicle.Powertrain.TractionBattery"
SOC: Final = f"{TB}.StateOfCharge.Displayed"
PACK_VOLTAGE: Final = f"{TB}.CurrentVoltage"
PACK_CURRENT: Final = f"{TB}.CurrentCurrent"
PACK_POWER: Final = f"{TB}.CurrentPower"
PACK_TEMP: Final = f"{TB}.Temperature.Average"
IS_CHARGING: Final = f"{TB}.Charging.IsCharging"
CABLE_CONNECTED: Final = f"{TB}.Charging.IsChargingCableConnected"
TIME_TO_COMPLETE: Final = f"{TB}.Charging.TimeToComplete"
CHARGE_LIMIT: Final = f"{TB}.Charging.ChargeLimit"
CHARGE_POWER: Final = f"{TB}.Charging.ChargeRate"  # VSS: charging power in kW
TIMER_MODE: Final = f"{TB}.Charging.Timer.Mode"  # a scheduled start is armed unless OFF/INACTIVE
TIMER_TIME: Final = f"{TB}.Charging.Timer.Time"
AUX_VOLTAGE: Final = "Vehicle.LowVoltageBattery.CurrentVoltage"
ODOMETER: Final = "Vehicle.TraveledDistance"
SPEED: Final = "Vehicle.Speed"
RANGE: Final = "Vehicle.Powertrain.Range"  # VSS: metres
GEAR: Final = "Vehicle.Powertrain.Transmission.SelectedGear"
TIME_TO_SERVICE: Final = "Vehicle.Service.TimeToService"
DISTANCE_TO_SERVICE: Final = "Vehicle.Service.DistanceToService"
DTC_LIST: Final = "Vehicle.Diagnostics.DTCList"
HVAC_ON: Final = "Vehicle.Cabin.HVAC.IsAirConditioningActive"
CABIN_TEMP: Final = "Vehicle.Cabin.HVAC.AmbientAirTemperature"

# Physically plausible values in VSS units. A decoded value outside is dropped, whatever the DBC
# says: real DBCs declare loose ranges (Tesla's v12vBattVoltage261 allows 0-22.3 V and reads 0.049 V).
PLAUSIBLE: Final[dict[str, tuple[float, float]]] = {
    SOC: (0.0, 100.0),
    PACK_VOLTAGE: (0.0, 1000.0),  # 0 V is real: contactors open
    PACK_CURRENT: (-2000.0, 2000.0),
    PACK_POWER: (-1000.0, 1000.0),
    PACK_TEMP: (-40.0, 90.0),
    TIME_TO_COMPLETE: (0.0, 7 * 86400.0),
    CHARGE_LIMIT: (0.0, 100.0),
    CHARGE_POWER: (-500.0, 500.0),
    AUX_VOLTAGE: (6.0, 18.0),
    ODOMETER: (0.0, 2_000_000.0),
    SPEED: (-60.0, 400.0),
    TIME_TO_SERVICE: (-3 * 365 * 86400.0, 5 * 365 * 86400.0),
    DISTANCE_TO_SERVICE: (-100_000.0, 200_000.0),
    CABIN_TEMP: (-50.0, 90.0),
}

BOOLEAN_PATHS: Final = frozenset({IS_CHARGING, CABLE_CONNECTED, HVAC_ON})
