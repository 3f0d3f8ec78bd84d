#!/usr/bin/env bash
# Installs (Debian packages) and starts the real services the tests use: PostgreSQL and
# mosquitto, both on loopback only; installs the real tools some tests drive: zbarimg (decodes
# the QR codes) and headless Chromium (loads the product page) with the Noto CJK fonts. Run as root on a Debian machine; prints the environment
# variables that point the tests at them. Safe to run twice.
set -euo pipefail

PG_PORT=${AGRITRACE_TEST_PG_PORT:-5432}
MQTT_PORT=${AGRITRACE_TEST_MQTT_PORT:-1884}   # 1883 stays free for the embedded amqtt broker
STATE=${AGRITRACE_TEST_STATE:-/tmp/agritrace-test-services}
mkdir -p "$STATE"

need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v zbarimg >/dev/null || need+=(zbar-tools)
command -v chromium >/dev/null || need+=(chromium)
# Chinese text in the screenshots of the zh pages (a phone has these fonts; a server has not).
fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || need+=(fonts-noto-cjk)
if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

# PostgreSQL: the Debian cluster, listening on loopback.
ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$ver main"; then
  pg_createcluster "$ver" main -p "$PG_PORT" >&2
fi
if ! pg_lsclusters -h | awk '$1=="'"$ver"'" && $2=="main" {print $4}' | grep -qx online; then
  pg_ctlcluster "$ver" main start >&2
fi
for _ in $(seq 1 30); do
  su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
su postgres -c "psql -qtAc \"select 1 from pg_roles where rolname='agritrace'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"create role agritrace login superuser password 'agritrace'\"" >&2
su postgres -c "psql -qtAc \"select 1 from pg_database where datname='agritrace_test'\"" | grep -q 1 \
  || su postgres -c "createdb -O agritrace agritrace_test" >&2

# mosquitto: a private instance on loopback, MQTT 5 capable (mosquitto >= 2).
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
if ! (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null; then
  cat >"$STATE/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 100000
set_tcp_nodelay true
CONF
  "$mosq" -c "$STATE/mosquitto.conf" -d
  for _ in $(seq 1 30); do
    (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null && break
    sleep 0.2
  done
fi

echo "export AGRITRACE_TEST_PG_URL=postgresql+psycopg://agritrace:agritrace@127.0.0.1:$PG_PORT/agritrace_test"
echo "export AGRITRACE_TEST_MQTT_URL=mqtt://127.0.0.1:$MQTT_PORT"
