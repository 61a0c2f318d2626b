#!/bin/sh
# Guest side of test_vm_canfd.py (plain init, no systemd): vcan0 as a CAN FD interface (mtu 72),
# a Mosquitto on the guest's loopback, `carfriend run` with the CAN FD profile over socketcan,
# and the host-written candump log of 64-byte FD frames ($J/fd.log) played onto vcan0.
# Env: PY (python with carfriend importable), REPO, GAP_S (seconds between frames).
set -u
J=/vcanvm-job
cd "$REPO"
stamp() { echo "$(date +%s) $*" >> $J/steps.txt; }
stamp boot
ip link add dev vcan0 type vcan && ip link set vcan0 mtu 72 && ip link set vcan0 up || exit 10
ip -d link show vcan0 > $J/show-link.txt 2>&1

printf 'listener 18830 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\n' > /tmp/mosquitto.conf
/usr/sbin/mosquitto -c /tmp/mosquitto.conf > $J/mosquitto.log 2>&1 &
for i in $(seq 50); do mosquitto_sub -h 127.0.0.1 -p 18830 -t '$SYS/#' -C 1 -W 1 >/dev/null 2>&1 && break; sleep 0.2; done
mosquitto_sub -h 127.0.0.1 -p 18830 -q 1 -t 'carfriend/v1/#' -F '%r	%t	%p' > $J/mqtt.txt 2>$J/mqtt.err &
SUB=$!
stamp broker

# The agent: the CAN FD profile ([can] socketcan vcan0, fd = true), pointed at the guest's broker.
export CARFRIEND_MQTT__HOST=127.0.0.1 CARFRIEND_MQTT__PORT=18830
export CARFRIEND_STORAGE__STATE_DIR=/var/tmp/carfriend-state
$PY -m agent.cli run --config config/vehicles/carfriend-ev-fd.toml > $J/agent.log 2>&1 &
AGENT=$!
for i in $(seq 600); do grep -q " ready" $J/agent.log && break; kill -0 $AGENT 2>/dev/null || break; sleep 0.5; done
grep -q " ready" $J/agent.log || { stamp "agent not ready"; exit 11; }
stamp agent-ready

# The host's log onto the bus as CAN FD frames with bit rate switching, paced so that a TCG
# guest's agent keeps up (the kernel drops what overflows its socket queue).
$PY - "$J/fd.log" > $J/play.log 2>&1 <<'PYEOF'
import os, sys, time
from pathlib import Path
import can
from agent.io.sources import read_log
gap = float(os.environ.get("GAP_S", "0.02"))
bus = can.Bus(interface="socketcan", channel="vcan0", fd=True)
n = 0
for _ts, fid, data in read_log(Path(sys.argv[1])):
    bus.send(can.Message(arbitration_id=fid, data=data, is_extended_id=False, is_fd=True, bitrate_switch=True),
             timeout=1.0)
    n += 1
    time.sleep(gap)
bus.shutdown()
print(f"played {n} frames, {max(len(d) for _t, _i, d in read_log(Path(sys.argv[1])))} bytes the longest")
PYEOF
stamp played
sleep "${SETTLE_S:-5}"
kill -TERM $AGENT
for i in $(seq 120); do kill -0 $AGENT 2>/dev/null || break; sleep 0.5; done
kill -0 $AGENT 2>/dev/null && { stamp "agent did not stop"; kill -9 $AGENT; }
wait $AGENT; echo "$?" > $J/agent.rc
stamp agent-stopped
sleep 2
kill $SUB
exit 0
