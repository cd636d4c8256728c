# Sourced by .ci/run: install PostgreSQL from the Debian packages, start a throwaway server on
# 127.0.0.1 (data in a temp folder, run as the `postgres` user since the server refuses root), export
# NAS_TEST_POSTGRES_URL for the tests marked `postgres`, and stop it when the calling shell exits.
# Without a server (not root and none installed) the postgres tests skip and say why.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; } || echo "ci: could not install PostgreSQL" >&2
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$PG_BIN" ]; then
    echo "ci: PostgreSQL is not installed; the tests marked postgres will be skipped" >&2
else
    PG_DIR=$(mktemp -d /tmp/nas-ci-pg.XXXXXX)
    chmod 755 "$PG_DIR" && mkdir "$PG_DIR/sock" && echo nas-ci-pw > "$PG_DIR/pw"
    PG_AS=()
    if [ "$(id -u)" = 0 ]; then
        chown -R postgres "$PG_DIR"
        PG_AS=(runuser -u postgres --)
    fi
    "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U nas --pwfile="$PG_DIR/pw" \
        --auth-host=scram-sha-256 --auth-local=trust -E UTF8 >/dev/null
    PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    nas_ci_stop_postgres() {
        "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    }
    trap nas_ci_stop_postgres EXIT
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 60 \
        -o "-p $PG_PORT -k $PG_DIR/sock -c listen_addresses=127.0.0.1" start >/dev/null
    "${PG_AS[@]}" "$PG_BIN/createdb" -h "$PG_DIR/sock" -p "$PG_PORT" -U nas nas_test
    export NAS_TEST_POSTGRES_URL="postgresql://nas:nas-ci-pw@127.0.0.1:$PG_PORT/nas_test"
    echo "ci: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT" >&2
fi
