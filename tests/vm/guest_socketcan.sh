#!/bin/sh
# Guest side of test_vm_socketcan.py (plain init, no systemd): vcan0, a Mosquitto on the guest's
# loopback, the simulator onto vcan0, `carfriend run` over socketcan. Results go to the job dir.
# Env: SCENARIO, SPEED, DURATION (simulated s), PY (python with carfriend importable), REPO.
set -u
J=/vcanvm-job
cd "$REPO"
stamp() { echo "$(date +%s) $*" >> $J/steps.txt; }
stamp boot
ip link add dev vcan0 type vcan && ip link set vcan0 up || exit 10

printf 'listener 18830 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\n' > /tmp/mosquitto.conf
/usr/sbin/mosquitto -c /tmp/mosquitto.conf > $J/mosquitto.log 2>&1 &
# The recorder: every publish on the vehicle's topics, one line each: retain<TAB>topic<TAB>payload
for i in $(seq 50); do mosquitto_sub -h 127.0.0.1 -p 18830 -t '$SYS/#' -C 1 -W 1 >/dev/null 2>&1 && break; sleep 0.2; done
mosquitto_sub -h 127.0.0.1 -p 18830 -q 1 -t 'carfriend/v1/#' -F '%r	%t	%p' > $J/mqtt.txt 2>$J/mqtt.err &
SUB=$!
stamp broker

# The agent: the reference EV profile, pointed at vcan0 and the guest's broker.
export CARFRIEND_CAN__INTERFACE=socketcan CARFRIEND_CAN__CHANNEL=vcan0
export CARFRIEND_MQTT__HOST=127.0.0.1 CARFRIEND_MQTT__PORT=18830
export CARFRIEND_STORAGE__STATE_DIR=/var/tmp/carfriend-state
$PY -m agent.cli run --config config/vehicles/carfriend-ev.toml > $J/agent.log 2>&1 &
AGENT=$!
for i in $(seq 600); do grep -q " ready" $J/agent.log && break; kill -0 $AGENT 2>/dev/null || break; sleep 0.5; done
grep -q " ready" $J/agent.log || { stamp "agent not ready"; exit 11; }
stamp agent-ready

# Frames no mapping needs: the kernel filters must keep them away from the agent.
# 0x7DF (OBD request), 0x123, and an extended id; each three times.
$PY - > $J/inject.log 2>&1 <<'PYEOF'
import can
bus = can.Bus(interface="socketcan", channel="vcan0")
for _ in range(3):
    for arb, ext in ((0x7DF, False), (0x123, False), (0x18DAF110, True)):
        bus.send(can.Message(arbitration_id=arb, is_extended_id=ext, data=bytes(8)))
bus.shutdown()
print("injected 9")
PYEOF
stamp injected

# The adapter is unplugged (the interface vanishes) and comes back: the agent must say so,
# keep running, and read again once it is back.
ip link delete vcan0
for i in $(seq 60); do grep -q "lost" $J/agent.log && break; sleep 0.5; done
stamp unplugged
sleep 3
ip link add dev vcan0 type vcan && ip link set vcan0 up
for i in $(seq 120); do grep -q -E "is (back|up)" $J/agent.log && break; sleep 0.5; done
stamp replugged

$PY -m agent.cli simulate --scenario "$SCENARIO" --interface socketcan --channel vcan0 \
  --speed "$SPEED" --duration "$DURATION" > $J/sim.log 2>&1
stamp simulated
# Let the agent drain its socket queue, then stop it as systemd would.
sleep "${SETTLE_S:-10}"
kill -TERM $AGENT
for i in $(seq 120); do kill -0 $AGENT 2>/dev/null || break; sleep 0.5; done
kill -0 $AGENT 2>/dev/null && { stamp "agent did not stop"; kill -9 $AGENT; }
wait $AGENT; echo "$?" > $J/agent.rc
stamp agent-stopped
sleep 2
kill $SUB
exit 0
