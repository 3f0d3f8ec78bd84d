# PostgreSQL from Debian's packages on the local Debian 12 base, for machines that cannot pull
# postgres:16 (deploy/compose.local.yaml). It behaves as compose.yaml expects of the official
# image: POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB create the role and database on an
# empty volume at /var/lib/postgresql/data; it listens on every address with password
# authentication; pg_isready is on PATH for the health check. Debian 12 ships PostgreSQL 15,
# which agritrace supports as well as 16.
ARG BASE=agritrace-local/base:bookworm
FROM ${BASE}

# Debian's postgresql-common would create a cluster of its own ("main") on install: the
# entrypoint creates the one in the volume instead.
RUN mkdir -p /etc/postgresql-common \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/*

# The server's own binaries (initdb, postgres, pg_isready) directly, not Debian's wrappers that
# look for clusters under /etc/postgresql.
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
# Owned by postgres in the image, so that a new named volume mounted there starts so too.
RUN install -d -o postgres -g postgres -m 700 "$PGDATA" \
    && install -d -o postgres -g postgres -m 2775 /var/run/postgresql

COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENTRYPOINT ["postgres-entrypoint.sh"]
# The fast shutdown: SIGTERM (smart) would wait for every client to disconnect.
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
