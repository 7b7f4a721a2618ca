# A throw-away PostgreSQL cluster on loopback for the tests marked `server`.
#
#   source .ci/postgres.sh && start_postgres   # installs PostgreSQL when missing; exports
#                                              # BEDROT_TEST_POSTGRES; stops the cluster on exit
#
# A developer can run it by hand too, then `make test` runs the server tests:
#   bash -c 'source .ci/postgres.sh && start_postgres && exec bash'
# initdb refuses to run as root, so as root the cluster belongs to the `postgres` user.

postgres_bin() {
    local bin
    for bin in /usr/lib/postgresql/*/bin; do
        [ -x "$bin/initdb" ] && { echo "$bin"; return 0; }
    done
    command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
    return 1
}

install_postgres() {
    postgres_bin >/dev/null && return 0
    echo "installing PostgreSQL (Debian's package) for the server tests" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null \
        || { DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq >/dev/null \
             && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null; }
}

start_postgres() {
    install_postgres
    local bin port dir as=()
    bin="$(postgres_bin)"
    dir="$(mktemp -d /tmp/bedrot-pg.XXXXXX)"
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "$dir"
        as=(runuser -u postgres --)
    fi
    "${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U mlflow -E UTF8 --no-sync >"$dir/initdb.log" \
        || { cat "$dir/initdb.log" >&2; return 1; }
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null \
        || { cat "$dir/pg.log" >&2; return 1; }
    BEDROT_TEST_POSTGRES_DIR="$dir"
    export BEDROT_TEST_POSTGRES="postgresql+psycopg://mlflow@127.0.0.1:$port/postgres"
    # shellcheck disable=SC2064  # the paths are fixed now, on purpose
    trap "${as[*]} '$bin/pg_ctl' -D '$dir/data' -m immediate stop >/dev/null 2>&1; rm -rf '$dir'" EXIT
    echo "PostgreSQL on 127.0.0.1:$port for the server tests (BEDROT_TEST_POSTGRES)" >&2
}
