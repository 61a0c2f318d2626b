#!/bin/sh
# Guest side of test_vm_diag.py (plain init): on a real kernel's vcan0, the simulated
# diagnostics-only car (its ECUs answer over ISO-TP), `carfriend run` polling it over socketcan,
# and a second reader recording every frame. When the simulator stops, the bus goes silent:
# the agent must stop polling. Env: SPEED, DURATION (simulated s), PY, REPO.
set -u
J=/vcanvm-job
cd "$REPO"
stamp() { echo "$(date +%s) $*" >> $J/steps.txt; }
stamp boot
ip link add dev vcan0 type vcan && ip link set vcan0 up || exit 10

# The second reader: every frame on vcan0 with the kernel's receive time, until killed.
$PY - > $J/frames.txt 2> $J/recorder.err <<'PYEOF' &
import can, sys
bus = can.Bus(interface="socketcan", channel="vcan0")
print("recording", flush=True)
while True:
    msg = bus.recv(1.0)
    if msg is not None:
        print(f"{msg.timestamp:.6f} {msg.arbitration_id:X} {bytes(msg.data).hex()}", flush=True)
PYEOF
REC=$!
for i in $(seq 120); do grep -q recording $J/frames.txt 2>/dev/null && break; sleep 0.5; done
stamp recorder

export CARFRIEND_CAN__INTERFACE=socketcan CARFRIEND_CAN__CHANNEL=vcan0
export CARFRIEND_STORAGE__STATE_DIR=/var/tmp/carfriend-state
$PY -m agent.cli run --config config/vehicles/carfriend-ev-obd.toml > $J/agent.log 2>&1 &
AGENT=$!
for i in $(seq 600); do grep -q " ready" $J/agent.log && break; kill -0 $AGENT 2>/dev/null || break; sleep 0.5; done
grep -q " ready" $J/agent.log || { stamp "agent not ready"; exit 11; }
stamp agent-ready
sleep 5   # the agent on a silent bus: it must send nothing
stamp silent-done

$PY -m agent.cli simulate --scenario diagnostics-only --interface socketcan --channel vcan0 \
  --speed "$SPEED" --duration "$DURATION" > $J/sim.log 2>&1
stamp simulated
sleep 10  # the bus is silent again: polling must have stopped
stamp quiet-done
kill -TERM $AGENT
for i in $(seq 120); do kill -0 $AGENT 2>/dev/null || break; sleep 0.5; done
kill -0 $AGENT 2>/dev/null && { stamp "agent did not stop"; kill -9 $AGENT; }
wait $AGENT; echo "$?" > $J/agent.rc
kill $REC
stamp done
exit 0
