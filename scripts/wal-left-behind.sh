#!/usr/bin/env bash
# How often a writer's close leaves its -wal behind because one of the mirror's
# reads was open (README, "Replacing the database while the mirror runs").
# Needs root, setpriv and Debian's python3: the writer runs as uid 4101, the
# mirror as uid 4102, in a fresh directory both may write.
#
#   scripts/wal-left-behind.sh [BINARY] [REFRESH_MS] [CLOSES]
#   (defaults: target/release/orchmirror, 1000, 300)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/orchmirror}")
PERIOD=${2:-1000}
CLOSES=${3:-300}
PY=/usr/bin/python3
DIR=$(mktemp -d)
trap 'kill "${MIRROR:-0}" 2>/dev/null || true; rm -rf "$DIR"' EXIT
chmod 777 "$DIR"
DB=$DIR/orch.db
"$PY" - "$DB" src/schema.sql <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1]); c.execute('pragma journal_mode=wal')
c.executescript(open(sys.argv[2]).read()); c.close()
PY
chown 4101:4101 "$DB"
cat > "$DIR/writer.py" <<'PY'
import os, random, sqlite3, sys, time
db, n = sys.argv[1], int(sys.argv[2])
left = 0
for i in range(n):
    c = sqlite3.connect(db, timeout=5)
    c.execute("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued')"); c.commit()
    c.close()
    time.sleep(0.001)
    if os.path.exists(db + '-wal') and os.path.getsize(db + '-wal') > 0:
        left += 1
        # Open and close once more, so the next close starts from no -wal.
        c = sqlite3.connect(db, timeout=5); c.execute('SELECT 1 FROM jobs LIMIT 1').fetchall(); c.close()
    time.sleep(random.random() * 0.05)
print(f"closes {n}, -wal left behind {left}")
PY
PORT=$((20000 + RANDOM % 20000))
setpriv --reuid=4102 --regid=4102 --clear-groups env -i ORCH_DB_PATH="$DB" ORCH_BIND="127.0.0.1:$PORT" \
    ORCH_REFRESH_MS="$PERIOD" "$BIN" >/dev/null 2>&1 &
MIRROR=$!
sleep 1
setpriv --reuid=4101 --regid=4101 --clear-groups "$PY" "$DIR/writer.py" "$DB" "$CLOSES"
