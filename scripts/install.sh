#!/bin/sh
# Install carfriend as a systemd service on Debian / Raspberry Pi OS (run as root).
#
#   sudo scripts/install.sh [options]
#
#   --can0 BITRATE      also install /etc/systemd/network/80-can0.network bringing can0 up at
#                       BITRATE (e.g. 500000) through systemd-networkd (real CAN hardware)
#   --vcan              also install vcan0 (systemd-networkd .netdev/.network) and point the
#                       new config at it: a developer machine with no CAN hardware
#   --vehicle FILE      vehicle profile the config skeleton starts from
#                       (default: config/vehicles/carfriend-ev.toml of this checkout)
#   --wheelhouse DIR    install offline from wheels built elsewhere with
#                       `pip wheel --wheel-dir DIR /path/to/carfriend` (a car has no internet)
#   --python PYTHON     interpreter for the venv (default: /usr/bin/python3, >= 3.11)
#   --no-start          enable the service but do not start it now
#   --check             only check that this machine has what these options need (Python 3.11;
#                       for --can0 and --vcan udev and systemd-networkd), change nothing
#
# What it does (again on a re-run, which upgrades the agent and keeps your config):
#   user and group `carfriend` (system, no login, no extra groups: raw CAN needs none)
#   /opt/carfriend/venv            a venv with this checkout installed
#   /opt/carfriend/share/          the checkout's vehicle profiles and DBCs, for reference
#   /etc/carfriend/carfriend.toml  a commented config skeleton, only if there is none yet
#   /etc/carfriend/dbc/            the shipped DBCs (files already there are kept)
#   /etc/carfriend/credentials/    root-only folder for LoadCredential= secrets
#   /etc/systemd/system/carfriend.service, enabled (and started unless --no-start)
# The agent keeps its outbox in /var/lib/carfriend (StateDirectory=), created by systemd.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/carfriend
ETC=/etc/carfriend
PYTHON=/usr/bin/python3
VEHICLE=$SRC/config/vehicles/carfriend-ev.toml
WHEELHOUSE=
CAN0_BITRATE=
VCAN=0
START=1
CHECK=0

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
  case $1 in
    --can0) CAN0_BITRATE=${2:?--can0 needs a bitrate}; shift 2 ;;
    --vcan) VCAN=1; shift ;;
    --vehicle) VEHICLE=${2:?}; shift 2 ;;
    --wheelhouse) WHEELHOUSE=${2:?}; shift 2 ;;
    --python) PYTHON=${2:?}; shift 2 ;;
    --no-start) START=0; shift ;;
    --check) CHECK=1; shift ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ -f "$SRC/pyproject.toml" ] && [ -f "$SRC/systemd/carfriend.service" ] || die "$SRC is not a carfriend checkout"
[ -f "$VEHICLE" ] || die "vehicle profile $VEHICLE not found"
case $CAN0_BITRATE in ''|*[!0-9]*) [ -z "$CAN0_BITRATE" ] || die "--can0 wants a number (e.g. 500000), got $CAN0_BITRATE" ;; esac

check_python() {
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "$PYTHON is missing or older than 3.11 (Debian 12 / Raspberry Pi OS bookworm have 3.11)"
}

check_network() {
  # systemd-networkd brings the CAN link up, but only a link udev has initialised: without
  # udev it waits for ever and the link stays down.
  [ "$VCAN" = 1 ] || [ -n "$CAN0_BITRATE" ] || return 0
  missing=
  command -v udevadm >/dev/null 2>&1 || missing=udev
  command -v networkctl >/dev/null 2>&1 || missing="$missing${missing:+ }systemd"
  [ -z "$missing" ] || die "--can0/--vcan need udev and systemd-networkd (networkd brings the CAN \
link up once udev has seen it); install what is missing: apt-get install -y $missing"
}

ensure_python() {
  check_python
  # Debian splits venv and ensurepip out of python3.
  if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    say "installing python3-venv"
    apt-get install -y --no-install-recommends python3-venv >/dev/null
  fi
}

ensure_user() {
  if ! getent group carfriend >/dev/null; then
    groupadd --system carfriend
  fi
  if ! getent passwd carfriend >/dev/null; then
    say "creating system user carfriend"
    useradd --system --gid carfriend --home-dir /var/lib/carfriend --no-create-home \
      --shell /usr/sbin/nologin --comment "carfriend agent" carfriend
  fi
}

install_venv() {
  say "installing the agent into $PREFIX/venv"
  mkdir -p "$PREFIX"
  [ -x "$PREFIX/venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/venv"
  if [ -n "$WHEELHOUSE" ]; then
    "$PREFIX/venv/bin/pip" install --quiet --no-index --find-links "$WHEELHOUSE" --upgrade carfriend
  else
    "$PREFIX/venv/bin/pip" install --quiet --upgrade "$SRC"
  fi
  "$PREFIX/venv/bin/carfriend" --help >/dev/null || die "the installed carfriend does not run"
  mkdir -p "$PREFIX/share"
  rm -rf "$PREFIX/share/dbc" "$PREFIX/share/vehicles"
  cp -r "$SRC/dbc" "$PREFIX/share/dbc"
  cp -r "$SRC/config/vehicles" "$PREFIX/share/vehicles"
}

install_config() {
  install -d -m 0755 "$ETC" "$ETC/dbc"
  install -d -m 0700 "$ETC/credentials"
  for dbc in "$SRC"/dbc/*.dbc; do
    [ -e "$ETC/dbc/$(basename "$dbc")" ] || install -m 0644 "$dbc" "$ETC/dbc/"
  done
  if [ -e "$ETC/carfriend.toml" ]; then
    say "keeping your $ETC/carfriend.toml"
    return
  fi
  say "writing the config skeleton $ETC/carfriend.toml (from $(basename "$VEHICLE"))"
  channel=can0; [ "$VCAN" = 1 ] && channel=vcan0
  "$PYTHON" - "$VEHICLE" "$channel" > "$ETC/carfriend.toml.new" <<'PY'
import re, sys, tomllib
from pathlib import Path

profile, channel = Path(sys.argv[1]), sys.argv[2]
text = profile.read_text()
dbcs = [Path(p).name for p in tomllib.loads(text).get("can", {}).get("dbc", [])]

def in_can_section(text: str, key: str, value: str) -> str:
    """Set one key of [can] on its own line, keeping the profile's comments."""
    head, sep, rest = text.partition("\n[can]\n")
    body, nxt, tail = rest.partition("\n[")
    line = re.compile(rf"^{key}\s*=.*$", re.M)
    body = line.sub(f"{key} = {value}", body) if line.search(body) else f"{key} = {value}\n{body}"
    return head + sep + body + nxt + tail

text = in_can_section(text, "interface", '"socketcan"')
text = in_can_section(text, "channel", f'"{channel}"')
text = in_can_section(text, "dbc", "[" + ", ".join(f'"dbc/{n}"' for n in dbcs) + "]")
print(f"""\
# carfriend agent configuration: /etc/carfriend/carfriend.toml
# Started from the vehicle profile {profile.name}; see docs/deployment.md.
# Check it with:  sudo -u carfriend /opt/carfriend/venv/bin/carfriend check-config /etc/carfriend/carfriend.toml
# Apply changes:  sudo systemctl reload carfriend   (a config with errors is refused, the old one kept)
#
# Relative paths are relative to this file (dbc/ is /etc/carfriend/dbc/).
# Any value can be overridden from the unit's environment: CARFRIEND_<SECTION>__<KEY>,
# e.g. `systemctl edit carfriend` -> [Service] Environment=CARFRIEND_MQTT__HOST=broker.example.net
#
# The broker (add this section, or edit it if the profile already has one):
# [mqtt]
# host = "broker.example.net"
# port = 8883
# username = "carfriend-ev-0001"
# # The password is not written here: put it in /etc/carfriend/credentials/mqtt-password
# # (chmod 600) and add LoadCredential=mqtt-password:/etc/carfriend/credentials/mqtt-password
# # with `systemctl edit carfriend` (see carfriend.service for the lines).
# [mqtt.tls]
# ca_file = "/etc/carfriend/ca.crt"
# cert_file = "/etc/carfriend/client.crt"
# # The private key likewise comes as the credential mqtt-client-key.
#
# Where the outbox lives: /var/lib/carfriend under systemd (StateDirectory=), unless set here:
# [storage]
# state_dir = "/var/lib/carfriend"

{text.rstrip()}
""")
PY
  chmod 0644 "$ETC/carfriend.toml.new"
  mv "$ETC/carfriend.toml.new" "$ETC/carfriend.toml"
}

install_network() {
  net=/etc/systemd/network
  if [ "$VCAN" = 1 ]; then
    install -d "$net"
    install -m 0644 "$SRC/systemd/vcan0.netdev" "$net/80-vcan0.netdev"
    install -m 0644 "$SRC/systemd/vcan0.network" "$net/80-vcan0.network"
  fi
  if [ -n "$CAN0_BITRATE" ]; then
    install -d "$net"
    sed "s/^BitRate=.*/BitRate=$CAN0_BITRATE/" "$SRC/systemd/can0.network" > "$net/80-can0.network"
    chmod 0644 "$net/80-can0.network"
  fi
  if [ "$VCAN" = 1 ] || [ -n "$CAN0_BITRATE" ]; then
    say "enabling systemd-networkd for the CAN interface"
    systemctl enable --quiet systemd-networkd 2>/dev/null || true
    # networkd then manages only the CAN link (RequiredForOnline=no). Where NetworkManager or
    # ifupdown runs the IP network, networkd's wait-online would find no link to wait for and
    # hold network-online.target for 2 minutes at every boot: leave "online" to them.
    if systemctl is-enabled --quiet NetworkManager.service 2>/dev/null \
        || systemctl is-enabled --quiet networking.service 2>/dev/null; then
      systemctl disable --quiet systemd-networkd-wait-online.service 2>/dev/null || true
    fi
    if systemd_running; then
      systemctl restart systemd-networkd
    fi
  fi
}

install_unit() {
  say "installing /etc/systemd/system/carfriend.service"
  install -m 0644 "$SRC/systemd/carfriend.service" /etc/systemd/system/carfriend.service
  if ! systemd_running; then
    systemctl enable --quiet carfriend 2>/dev/null || ln -sf /etc/systemd/system/carfriend.service \
      /etc/systemd/system/multi-user.target.wants/carfriend.service
    say "systemd is not running here: enabled for the next boot, not started"
    return
  fi
  systemctl daemon-reload
  if [ "$START" = 1 ]; then
    systemctl enable --quiet carfriend
    # restart, not start: a re-run upgrades a running agent
    systemctl restart carfriend || {
      systemctl --no-pager status carfriend || true
      die "carfriend did not start: see journalctl -u carfriend"
    }
    say "carfriend is running: systemctl status carfriend; journalctl -u carfriend -f"
  else
    systemctl enable --quiet carfriend
    say "carfriend is enabled; start it with: systemctl start carfriend"
  fi
}

systemd_running() { [ -d /run/systemd/system ]; }

check_network   # before changing anything
if [ "$CHECK" = 1 ]; then
  check_python
  say "this machine has what the install with these options needs"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "run as root (sudo $0)"
ensure_python
ensure_user
install_venv
install_config
install_network
install_unit
