# One image for every agritrace service (compose.yaml): ingest, the API, witnesses, the
# simulator and the one-shot init. `docker build -t agritrace .`
FROM python:3.11-slim

# A fixed uid, so that compose's init can hand the shared volumes to it.
RUN useradd --system --uid 10001 --create-home --home-dir /home/agritrace agritrace \
    && mkdir -p /data && chown agritrace:agritrace /data

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
