# resendd in a container: a multi-stage build on Debian 12 with the same package lists as the
# README's commands (scripts/deps.sh), and a slim runtime that runs as a non-root user with its
# database in a volume.
#   docker build -t resendd .
#   docker run -d -p 127.0.0.1:9000:9000 -e RESENDD_API_TOKENS=... -v resendd-data:/var/lib/resendd resendd
# or compose.yaml. The container listens on 0.0.0.0:9000, so api_tokens are required (the daemon
# refuses to start without them): pass RESENDD_API_TOKENS, or mount a config at
# /etc/resendd/resendd.toml.

FROM debian:12-slim AS build
WORKDIR /src
COPY scripts/deps.sh scripts/deps.sh
RUN scripts/deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN rm -rf build* \
 && cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRESENDD_TESTS=OFF -DRESENDD_BENCH=OFF \
 && cmake --build /build -j"$(nproc)" \
 && DESTDIR=/out cmake --install /build \
 && sed -i 's/^listen = "127.0.0.1:9000"$/listen = "0.0.0.0:9000"/' /out/etc/resendd/resendd.toml \
 && grep -q '^listen = "0.0.0.0:9000"$' /out/etc/resendd/resendd.toml \
 && grep -q '^path = "/var/lib/resendd/resendd.db"$' /out/etc/resendd/resendd.toml

FROM debian:12-slim
COPY scripts/deps.sh /tmp/deps.sh
RUN /tmp/deps.sh --runtime && rm -rf /tmp/deps.sh /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/resendd --create-home \
      --shell /usr/sbin/nologin resendd \
 && chmod 0700 /var/lib/resendd
COPY --from=build /out/usr/local/bin/resendd /usr/local/bin/resendd
# The CLI reads /etc/resendd/resendd.toml when no --config is given: `resendd serve`,
# `resendd healthcheck` and `resendd jobs list` (docker exec) all find it.
COPY --from=build /out/etc/resendd/resendd.toml /etc/resendd/resendd.toml
USER resendd
WORKDIR /var/lib/resendd
VOLUME /var/lib/resendd
EXPOSE 9000
# SIGTERM: deliveries in flight finish within delivery.shutdown_grace (10 s); give it time.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=6s --start-period=10s --retries=3 CMD ["resendd", "healthcheck"]
ENTRYPOINT ["resendd"]
CMD ["serve"]
