# rl-v2: release build in a Rust image, run as a non-root user in a slim Debian image.
FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies in their own layer, rebuilt only when a manifest or the lock file changes: the
# workspace's manifests with empty sources first, then the real sources.
COPY Cargo.toml Cargo.lock ./
COPY crates/core/Cargo.toml crates/core/
COPY crates/service/Cargo.toml crates/service/
COPY crates/tools/Cargo.toml crates/tools/
RUN mkdir -p src crates/core/src crates/service/src crates/tools/src crates/tools/benches \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > crates/tools/benches/engine.rs \
    && touch crates/core/src/lib.rs crates/service/src/lib.rs crates/tools/src/lib.rs \
    && cargo build --release --locked --bin rl-v2 \
    && rm -rf src crates/*/src
COPY config config
COPY src src
COPY crates crates
# The copied sources may be older than the placeholders' build: make sure they count as changed.
RUN touch src/main.rs crates/*/src/lib.rs \
    && cargo build --release --locked --bin rl-v2

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
