# One image for every server process: `freecar api`, `freecar hub`, `freecar migrate`,
# `freecar vehicle ...` and `celery -A worker.app worker` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Sources only (.dockerignore keeps tests, the virtualenv and any .env out of the image).
COPY pyproject.toml README.md LICENSE ./
COPY freecar ./freecar
COPY core ./core
COPY jobs ./jobs
COPY protocol ./protocol
COPY vehicle_agent ./vehicle_agent
COPY simulator ./simulator
COPY hub ./hub
COPY api ./api
COPY db ./db
COPY worker ./worker
COPY broker ./broker
COPY devstack ./devstack
RUN pip install ".[server]"

# Never root: the processes need no privilege, and the file store's volume is theirs.
RUN useradd --system --uid 10001 --home-dir /app freecar \
    && mkdir -p /var/lib/freecar/files \
    && chown -R freecar /var/lib/freecar
USER freecar

EXPOSE 8000
CMD ["freecar", "api"]
