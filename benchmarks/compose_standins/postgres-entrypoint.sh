#!/bin/sh
# Entrypoint of the PostgreSQL stand-in image that benchmarks/compose_check.sh builds from Debian's
# postgresql package when no image registry is reachable. Like the official postgres image: on
# first start (empty $PGDATA) it creates the cluster with superuser POSTGRES_USER (default
# postgres) and password POSTGRES_PASSWORD (required, unless POSTGRES_HOST_AUTH_METHOD=trust),
# and the database POSTGRES_DB (default: the user's name); then it runs the server, listening on
# all of the container's addresses, password authentication for TCP, trust on the local socket.
# Not covered: /docker-entrypoint-initdb.d scripts, POSTGRES_INITDB_ARGS, *_FILE secrets.
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
POSTGRES_HOST_AUTH_METHOD=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
export PGDATA

if [ "${1:-postgres}" != postgres ]; then
    exec "$@"  # e.g. psql or bash
fi

if [ "$(id -u)" = 0 ]; then  # the volume is root's when first mounted: hand it to postgres
    mkdir -p "$PGDATA" /run/postgresql
    chown -R postgres:postgres "$PGDATA" /run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        echo "postgres stand-in: POSTGRES_PASSWORD is not set; set it (or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-}" > "$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
        --auth-host="$POSTGRES_HOST_AUTH_METHOD" --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        # A server on the socket only, for the one statement; the real one starts below.
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
        psql -v ON_ERROR_STOP=1 --username="$POSTGRES_USER" --dbname=postgres -q \
            -c "CREATE DATABASE \"$POSTGRES_DB\""
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
    echo "postgres stand-in: created the cluster, user $POSTGRES_USER, database $POSTGRES_DB"
fi

shift $(( $# > 0 ? 1 : 0 ))  # "postgres"; what follows are server options (-c name=value)
exec postgres -c listen_addresses='*' "$@"
