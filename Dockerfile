# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with the full toolchain, install it into a clean virtualenv, and
# ship that virtualenv on a slim base with nothing else added. Runs as uid 10001 (the Helm
# chart's default) and needs no shell: ENTRYPOINT is the console script, in exec form.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/cloudjob-exporter \
 && /opt/cloudjob-exporter/bin/pip install --no-cache-dir /wheels/*.whl

FROM python:3.11-slim
LABEL org.opencontainers.image.title="cloudjob-exporter" \
      org.opencontainers.image.description="Prometheus exporter for asynchronous cloud jobs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/cloudjob-exporter /opt/cloudjob-exporter
ENV PATH=/opt/cloudjob-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 9871
ENTRYPOINT ["cloudjob-exporter"]
CMD ["--listen", "0.0.0.0:9871"]
