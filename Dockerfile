# rl-v2: release build in a Rust image, run as a non-root user in a slim Debian image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin rl-v2

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin rl \
    && mkdir -p /app/config /app/data/rl_v2 \
    && chown -R rl /app
COPY --from=build /src/target/release/rl-v2 /usr/local/bin/rl-v2
COPY config/default.toml /app/config/default.toml
WORKDIR /app
USER rl
# Checkpoints and the Python-format Q-tables live here: keep it on a volume.
VOLUME ["/app/data"]
ENV RL_V2__LOG__FORMAT=json
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["rl-v2", "health"]
ENTRYPOINT ["rl-v2"]
CMD ["serve"]
