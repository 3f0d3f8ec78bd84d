# One image for every agritrace service (compose.yaml): ingest, the API, witnesses, the
# simulator and the one-shot init. `docker build -t agritrace .`
#
# BASE is any Debian-like image with Python 3.11 or apt: the default is the public Python image;
# deploy/compose.local.yaml passes a Debian 12 root built locally (scripts/compose-test.sh), for
# machines that cannot pull from a registry.
ARG BASE=python:3.11-slim
FROM ${BASE}

# Debian's own root has no Python: take Debian's (3.11 in Debian 12) and its venv module. The
# Python image has both already, so this installs nothing there.
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# A fixed uid, so that compose's init can hand the shared volumes to it.
RUN useradd --system --uid 10001 --create-home --home-dir /home/agritrace agritrace \
    && mkdir -p /data && chown agritrace:agritrace /data

# The project and its dependencies go into a virtualenv, the same on either base: Debian's
# Python refuses pip installs into the system (PEP 668), and the venv's bin/ on PATH gives the
# `agritrace` and `python` commands compose's scripts and health checks call.
ENV VIRTUAL_ENV=/opt/agritrace
ENV PATH=/opt/agritrace/bin:$PATH
RUN python3 -m venv /opt/agritrace

WORKDIR /src
COPY pyproject.toml README.md ./
COPY agritrace ./agritrace
COPY tracecore ./tracecore
COPY ingest ./ingest
COPY traceapi ./traceapi
COPY witness ./witness
COPY firmware_sim ./firmware_sim
COPY gateway ./gateway
COPY contracts ./contracts
RUN pip install --no-cache-dir . && rm -rf /src

WORKDIR /home/agritrace
USER agritrace
ENV AGRITRACE_DATA_DIR=/data PYTHONUNBUFFERED=1
EXPOSE 8000 8100
ENTRYPOINT ["agritrace"]
CMD ["demo", "--host", "0.0.0.0"]
