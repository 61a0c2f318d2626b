#!/usr/bin/env bash
# Run the whole test suite on a fresh clone: installs what it needs (Debian packages when
# missing, a venv with the project), then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)   # the VM tests record with it
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v openssl >/dev/null || need+=(openssl)
command -v chromium >/dev/null || need+=(chromium)   # the relay's browser test
# The relay's suite starts its own throw-away PostgreSQL cluster (initdb + pg_ctl, no service).
command -v initdb >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
  || need+=(postgresql)
# The real-kernel VM tests' packages (qemu, udev, ...): one list, kept in tests/vm/setup.sh.
if [ "${CARFRIEND_TEST_VM:-1}" = 1 ]; then
  read -r -a vm_need <<< "$(sh tests/vm/setup.sh --missing)"
  need+=("${vm_need[@]}")
fi
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: please install: ${need[*]} (apt-get install -y ${need[*]})" >&2; exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,relay]'

# Default: everything, the real-kernel VM tests included (CARFRIEND_TEST_VM=0 leaves them out).
if [ "${CARFRIEND_TEST_VM:-1}" = 1 ] && [ $# -eq 0 ]; then
  set -- -m "vm or not vm"
fi
exec .venv/bin/python -m pytest "$@"
