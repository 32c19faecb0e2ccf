# Slim, non-root image that runs `nobill serve`.
FROM python:3.11-slim AS build
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY nobill ./nobill
COPY gen ./gen
COPY migrations ./migrations
RUN python -m venv /venv \
 && /venv/bin/pip install --no-cache-dir --upgrade pip \
 && /venv/bin/pip install --no-cache-dir -c constraints.txt -e .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /app nobill
WORKDIR /app
COPY --from=build /venv /venv
COPY --from=build --chown=root:root /app /app
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NOBILL_GRPC_ADDR=0.0.0.0:50051
USER nobill
EXPOSE 50051
# The source tree stays in /app (installed editable) so `nobill migrate` finds migrations/.
ENTRYPOINT ["nobill"]
CMD ["serve"]
