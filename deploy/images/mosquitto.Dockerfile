# mosquitto 2 from Debian's packages on the local Debian 12 base, for machines that cannot pull
# eclipse-mosquitto:2 (deploy/compose.local.yaml). As in that image, the broker runs as uid and
# gid 1883 (compose's init hands /config/passwd and /config/acl to them) and keeps its
# persistence in /mosquitto/data; compose mounts the configuration at /agritrace/mosquitto.conf
# and passes it with -c. mosquitto_sub (mosquitto-clients) is the health check.
ARG BASE=agritrace-local/base:bookworm
FROM ${BASE}

# The user exists before the package, whose install script then keeps it (it creates one
# only when none exists) instead of choosing a system uid of its own.
RUN groupadd --system --gid 1883 mosquitto \
    && useradd --system --uid 1883 --gid 1883 --no-create-home --home-dir /var/lib/mosquitto \
        --shell /usr/sbin/nologin mosquitto \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        mosquitto mosquitto-clients \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o mosquitto -g mosquitto /mosquitto/data /mosquitto/log

# Started as root, like eclipse-mosquitto:2: the broker drops to its `mosquitto` user (uid 1883)
# by itself, while compose's health check, run as root, can read the ingest password that
# belongs to the agritrace user (uid 10001).
EXPOSE 1883
# Without a configuration mosquitto 2 listens on loopback only; compose.yaml passes its own.
CMD ["mosquitto"]
