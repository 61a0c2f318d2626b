#!/bin/sh
# Guest side of test_vm_systemd.py (systemd is PID 1; vcan0 comes from systemd-networkd and the
# project's vcan0.netdev): install as a user would, then start with vcan0 down, bring it up,
# watch, freeze, stop, uninstall.
# Env: WHEELHOUSE (wheels of carfriend and its dependencies: the guest has no network), PY, REPO,
# LINK_DOWN_S (how long vcan0 stays down after the agent started).
set -u
J=/vcanvm-job
cd "$REPO"
stamp() { echo "$(date +%s) $*" >> $J/steps.txt; }
show() { systemctl show -p ActiveState,SubState,Result,StatusText,MainPID,NRestarts carfriend > "$J/show-$1.txt"; }
prop() { systemctl show -p "$1" --value carfriend; }
stamp boot
ip -details link show vcan0 > $J/vcan0.txt 2>&1

sh scripts/install.sh --vcan --wheelhouse "$WHEELHOUSE" --no-start > $J/install.log 2>&1 || { stamp "install failed"; exit 10; }
stamp installed
# install.sh restarted networkd, which brings vcan0 up again (given udev)
for i in $(seq 120); do ip link show vcan0 2>/dev/null | grep -q '[<,]UP[,>]' && break; sleep 0.5; done
ip -details link show vcan0 > $J/vcan0-installed.txt 2>&1
stamp vcan0-up

printf 'listener 18830 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\n' > /tmp/mosquitto.conf
/usr/sbin/mosquitto -c /tmp/mosquitto.conf > $J/mosquitto.log 2>&1 &
for i in $(seq 50); do mosquitto_sub -h 127.0.0.1 -p 18830 -t '$SYS/#' -C 1 -W 1 >/dev/null 2>&1 && break; sleep 0.2; done
mosquitto_sub -h 127.0.0.1 -p 18830 -q 1 -t 'carfriend/v1/#' -F '%r	%t	%p' > $J/mqtt.txt 2>$J/mqtt.err &
SUB=$!

# The one thing a person sets after installing: the broker (docs/deployment.md does it this way).
mkdir -p /etc/systemd/system/carfriend.service.d
printf '[Service]\nEnvironment=CARFRIEND_MQTT__HOST=127.0.0.1 CARFRIEND_MQTT__PORT=18830\n' \
  > /etc/systemd/system/carfriend.service.d/broker.conf
systemctl daemon-reload
systemctl enable carfriend > /dev/null 2>&1
# The link is down when the agent starts (as a can0 without a bitrate stays): the agent must be
# ready, wait for it saying so once (log and STATUS=), and read once it is up.
ip link set vcan0 down
systemctl start carfriend; echo "$?" > $J/start.rc   # returns once READY=1 arrived
stamp started
show ready
sleep "$LINK_DOWN_S"
show down
ip -details link show vcan0 > $J/vcan0-down.txt 2>&1
ip link set vcan0 up
stamp link-up

$PY -m agent.cli simulate --scenario fault-dtc --interface socketcan --channel vcan0 \
  --speed 60 --duration 720 > $J/sim.log 2>&1
for i in $(seq 120); do grep -q '/messages	' $J/mqtt.txt && break; sleep 0.5; done
sleep 3   # one more housekeeping round: STATUS= with the counters
stamp flowed
show flow

systemctl reload carfriend; echo "$?" > $J/reload.rc
sleep 5
stamp reloaded
show reloaded

# Freeze the worker: no more WATCHDOG=1, so systemd must kill and restart it.
PID=$(prop MainPID); echo "$PID" > $J/frozen.pid
kill -STOP "$PID"
stamp frozen
for i in $(seq 300); do
  [ "$(prop NRestarts)" -ge 1 ] && [ "$(prop MainPID)" != "$PID" ] && [ "$(prop SubState)" = running ] && break
  sleep 1
done
stamp restarted
show restarted

systemctl stop carfriend
stamp stopped
show stopped
sleep 2
kill $SUB
journalctl -u carfriend --no-pager -o short-monotonic > $J/journal.txt 2>&1

# A config with a typo: the start fails with exit status 1, `systemctl status` says why in one
# line, and systemd retries no faster than RestartSec=.
printf '[Service]\nEnvironment=CARFRIEND_CAN__BITRAET=500000\n' > /etc/systemd/system/carfriend.service.d/typo.conf
systemctl daemon-reload
systemctl start carfriend; echo "$?" > $J/badstart.rc
show bad
sleep 30
show bad-later
SYSTEMD_COLORS=0 systemctl status --no-pager -n 5 carfriend > $J/status-bad.txt 2>&1
journalctl -u carfriend --no-pager -n 20 -o cat > $J/journal-bad.txt 2>&1
systemctl stop carfriend
rm /etc/systemd/system/carfriend.service.d/typo.conf
systemctl daemon-reload
stamp bad-config

sh scripts/uninstall.sh > $J/uninstall.log 2>&1; echo "$?" > $J/uninstall.rc
{ for p in /opt/carfriend /etc/systemd/system/carfriend.service /etc/carfriend /var/lib/carfriend; do
    [ -e "$p" ] && echo "present $p" || echo "absent $p"
  done
  getent passwd carfriend >/dev/null && echo "present user" || echo "absent user"
} > $J/after-uninstall.txt
stamp done
exit 0
