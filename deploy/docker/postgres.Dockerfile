# PostgreSQL 15 from Debian's own packages, for the compose file's database where the public postgres image cannot
# be pulled (CI: no registry access). Same contract as the official image for what docker-compose.yml uses:
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB create the role and database on first start, the data lives in
# /var/lib/postgresql/data (a volume), pg_isready answers the health check. Select it with
#   OBSERVER_POSTGRES_IMAGE=observer-postgres:15 (docs/deploy.md).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql

COPY deploy/docker/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PGDATA=/var/lib/postgresql/data \
    PATH=/usr/lib/postgresql/15/bin:$PATH
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
