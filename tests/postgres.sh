#!/usr/bin/env bash
# Runs the command given with RESPONDER_TEST_POSTGRES_URL naming a PostgreSQL server for the
# tests: the URL already set; else the server on 127.0.0.1:5432 (trust auth, database `test`)
# when it answers; else a throw-away cluster from Debian's `postgresql` package, started in a
# temporary directory on a free port and removed afterwards.
# RESPONDER_TEST_POSTGRES=throwaway skips the look at 127.0.0.1:5432.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"

answers() {  # $1: a libpq URL; true when a connection and `select 1` succeed within 3 s
	"$python" - "$1" <<-'EOF' >/dev/null 2>&1
	import asyncio, sys
	import asyncpg
	async def main() -> None:
	    conn = await asyncpg.connect(sys.argv[1], timeout=3)
	    await conn.fetchval("select 1")
	    await conn.close()
	asyncio.run(main())
	EOF
}

if [ -n "${RESPONDER_TEST_POSTGRES_URL:-}" ]; then
	exec "$@"
fi
if [ "${RESPONDER_TEST_POSTGRES:-}" != throwaway ] && answers postgresql://postgres@127.0.0.1:5432/test; then
	export RESPONDER_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test
	exec "$@"
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ]; then
	echo "postgres.sh: no PostgreSQL on 127.0.0.1:5432; installing Debian's postgresql" >&2
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
		postgresql >/dev/null
	bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/responder-pg.XXXXXX")
as=()
if [ "$(id -u)" = 0 ]; then  # initdb refuses to run as root
	chown postgres "$dir"
	as=(runuser -u postgres --)
fi
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
stop() {
	"${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap stop EXIT
"${as[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log"
"${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
	-o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" \
	start >/dev/null
"${as[@]}" "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres test
echo "postgres.sh: throw-away PostgreSQL on 127.0.0.1:$port ($dir)" >&2
export RESPONDER_TEST_POSTGRES_URL="postgresql+asyncpg://postgres@127.0.0.1:$port/test"
"$@"
