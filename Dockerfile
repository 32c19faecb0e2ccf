# Slim, non-root image that runs `nobill serve` (or any other command: `worker`, `scheduler`,
# `webhooks`, `migrate`). It holds the installed wheels only: no
# source tree (migrations ship inside the package, so `nobill migrate` works from here).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY client ./client
COPY nobill ./nobill
COPY gen ./gen
COPY migrations ./migrations
RUN python -m venv /venv \
 && /venv/bin/pip install --no-cache-dir --upgrade pip \
 && /venv/bin/pip wheel --no-cache-dir --no-deps -w /wheels ./client . \
 && /venv/bin/pip install --no-cache-dir -c constraints.txt /wheels/*.whl

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /app nobill
WORKDIR /app
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NOBILL_GRPC_ADDR=0.0.0.0:50051 \
    NOBILL_USAGE_GRPC_ADDR=0.0.0.0:50052 \
    NOBILL_WEBHOOKS_ADDR=0.0.0.0:8088
USER nobill
# gRPC (main), gRPC (usage streams), the webhook sidecar when run as `webhooks`.
EXPOSE 50051 50052 8088
ENTRYPOINT ["nobill"]
CMD ["serve"]
