#!/usr/bin/env bash
# Make sure the servers the test suite talks to are installed and listening on loopback.
# Each is installed from Debian's packages when missing and started when not running.
# OPC UA and Modbus servers are not here: the tests start real asyncua/pymodbus servers.
set -euo pipefail

SERVICES=${SHOPFLOOR_TEST_SERVICES:-}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local name=$1 port=$2
    for _ in $(seq 1 60); do
        port_open "$port" && { echo "$name is listening on $port"; return 0; }
        sleep 0.5
    done
    echo "error: $name did not start on port $port" >&2
    return 1
}

apt_ready=0
apt_install() {
    if [ "$apt_ready" = 0 ]; then apt-get update -qq; apt_ready=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# psql as the postgres superuser over the local socket (peer authentication).
pg_admin() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- psql -qtAX "$@"; else psql -qtAX "$@"; fi
}

# psql as the tests connect: postgres@127.0.0.1 without a password.
pg_test() { psql -h 127.0.0.1 -U postgres -w -qtAX "$@"; }

ensure_postgres() {
    local db=${SHOPFLOOR_TEST_PGDATABASE:-test}
    if port_open 5432; then
        echo "PostgreSQL is listening on 5432"
        command -v psql >/dev/null || apt_install postgresql-client
    else
        command -v pg_ctlcluster >/dev/null || apt_install postgresql
        local ver
        ver=$(ls /etc/postgresql | sort -V | tail -1)
        pg_ctlcluster --skip-systemctl-redirect "$ver" main start
        wait_port PostgreSQL 5432
    fi
    # A fresh Debian cluster wants passwords on TCP: trust loopback (a throwaway test server).
    if ! pg_test -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
        local hba
        hba=$(pg_admin -c 'SHOW hba_file')
        sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        pg_admin -c 'SELECT pg_reload_conf()' >/dev/null
        echo "PostgreSQL trusts loopback connections now ($hba)"
    fi
    if [ "$(pg_test -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
        pg_test -d postgres -c "CREATE DATABASE \"$db\""
        echo "created the PostgreSQL database $db"
    fi
}

ensure_mosquitto() {
    port_open 1883 && { echo "Mosquitto is listening on 1883"; return; }
    command -v mosquitto >/dev/null || apt_install mosquitto
    mosquitto -d -c /etc/mosquitto/mosquitto.conf
    wait_port Mosquitto 1883
}

ensure_nats() {
    # the binary is needed either way: the bus fault tests start nats-servers of their own
    command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || apt_install nats-server
    port_open 4222 && { echo "NATS is listening on 4222"; return; }
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_port NATS 4222
}

# Headless Debian chromium for the dashboard's end-to-end tests (Playwright drives it through
# executable_path; `playwright install` is never used).
ensure_chromium() {
    if [ -x /usr/bin/chromium ]; then echo "chromium is installed"; return; fi
    apt_install chromium
    echo "installed $(/usr/bin/chromium --version 2>/dev/null)"
}

for svc in $SERVICES; do
    "ensure_$svc"
done
[ -n "$SERVICES" ] || echo "the default suite needs no external servers"
