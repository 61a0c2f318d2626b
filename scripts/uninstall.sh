#!/bin/sh
# Remove what scripts/install.sh installed (run as root).
#
#   sudo scripts/uninstall.sh [--purge]
#
# Stops and disables carfriend, removes its unit (and drop-ins), /opt/carfriend and the
# `carfriend` user and group. Keeps /etc/carfriend (your config, DBCs and credentials) and
# /var/lib/carfriend (messages not yet delivered) unless --purge is given.
# The networkd CAN files (80-can0.network, 80-vcan0.*) are left: other software may use can0.
set -eu

PURGE=0
case ${1:-} in
  --purge) PURGE=1 ;;
  '') ;;
  -h|--help) sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "uninstall.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
esac
[ "$(id -u)" = 0 ] || { echo "uninstall.sh: run as root (sudo $0)" >&2; exit 1; }

if [ -d /run/systemd/system ]; then
  systemctl disable --now --quiet carfriend 2>/dev/null || true
else
  systemctl disable --quiet carfriend 2>/dev/null || true
fi
rm -f /etc/systemd/system/carfriend.service /etc/systemd/system/multi-user.target.wants/carfriend.service
rm -rf /etc/systemd/system/carfriend.service.d
[ -d /run/systemd/system ] && { systemctl daemon-reload; systemctl reset-failed carfriend 2>/dev/null || true; }

rm -rf /opt/carfriend
if getent passwd carfriend >/dev/null; then userdel carfriend; fi
if getent group carfriend >/dev/null; then groupdel carfriend; fi

if [ "$PURGE" = 1 ]; then
  rm -rf /etc/carfriend /var/lib/carfriend /var/lib/private/carfriend
  echo "==> carfriend removed, with its config and state"
else
  echo "==> carfriend removed; kept /etc/carfriend and /var/lib/carfriend (remove them with --purge)"
fi
