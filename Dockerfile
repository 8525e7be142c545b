# syntax=docker/dockerfile:1
# Build: a release binary, with dependencies cached in their own layer.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

# Run: a small Debian image, an unprivileged user, nothing but the binary.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /app --create-home candlecast \
 && mkdir -p /app/data \
 && chown candlecast:candlecast /app/data
COPY --from=build /src/target/release/candlecast /usr/local/bin/candlecast
WORKDIR /app
USER candlecast
# The embedded store (used when MONGO_URI is unset) lives here; mount a volume to keep it.
# The directory exists, owned by the service's user, before VOLUME: a fresh named
# volume copies that ownership, so the unprivileged service can create its database.
# BIND_ADDR is left to its default, ::, which takes IPv4 and IPv6 (Railway's private
# network is IPv6).
ENV PORT=8080 DATA_DIR=/app/data
VOLUME ["/app/data"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/candlecast"]
