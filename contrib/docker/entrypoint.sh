#!/bin/sh
# ankihost's container entrypoint: run the command (by default `ankihost serve`) as an
# unprivileged user whose ids are PUID and PGID (default: the image's ankihost user, 1000:1000).
#
# Started as root (the default), it gives the data folder (SYNC_BASE, /anki_data) to PUID:PGID
# when some file in it belongs to someone else, checks that the folder is writable, and drops
# every privilege (setpriv: new ids, no supplementary groups, no capabilities, no-new-privs).
# Started with `docker run --user UID:GID`, it only checks the folder. Anything wrong stops the
# container at once with one line saying what and how to fix it (`docker logs` shows it).
set -eu

DATA="${SYNC_BASE:-/anki_data}"
MAX_ID=2147483647

fail() {
    echo "ankihost container: $*" >&2
    exit 1
}

check_id() { # name value
    case "$2" in
        '' | *[!0-9]*) fail "$1='$2' must be a number (a user or group id, e.g. the output of 'id -u' on the host)" ;;
    esac
    if [ "${#2}" -gt 10 ] || [ "$2" -gt "$MAX_ID" ]; then
        fail "$1=$2 is too large (at most $MAX_ID)"
    fi
}

describe() { # path
    echo "owner $(stat -c %u:%g "$1"), mode $(stat -c %a "$1")$(read_only && echo ", mounted read-only")"
}

read_only() {
    grep -qs " $DATA [^ ]* ro[, ]" /proc/mounts
}

advice() {
    if read_only; then
        echo "mount it writable (without :ro)"
    elif [ "$(id -u)" != 0 ]; then
        echo "run the container as the folder's owner (--user $(stat -c %u:%g "$DATA")), or change its owner on the host"
    else
        echo "set PUID/PGID to the folder's owner ($(stat -c %u:%g "$DATA")), or change its owner on the host"
    fi
}

check_writable() { # how-to-run-a-command...
    if ! "$@" test -w "$DATA" -a -x "$DATA"; then
        fail "$DATA is not writable by uid $RUN_UID gid $RUN_GID ($(describe "$DATA")): $(advice)"
    fi
}

if [ "$(id -u)" != 0 ]; then
    RUN_UID="$(id -u)" RUN_GID="$(id -g)"
    [ -d "$DATA" ] || fail "$DATA does not exist and uid $RUN_UID cannot create it: mount a volume there"
    check_writable env
    exec "$@"
fi

PUID="${PUID:-$(id -u ankihost)}"
PGID="${PGID:-$(id -g ankihost)}"
check_id PUID "$PUID"
check_id PGID "$PGID"
[ "$PUID" -ne 0 ] || fail "PUID=0 would run the server as root; use the id of an ordinary user (default 1000)"
RUN_UID="$PUID" RUN_GID="$PGID"

mkdir -p "$DATA" 2>/dev/null || fail "cannot create $DATA: mount a writable volume there"
if [ -n "$(find "$DATA" -xdev \( ! -user "$PUID" -o ! -group "$PGID" \) -print -quit 2>/dev/null)" ]; then
    echo "ankihost container: giving $DATA to $PUID:$PGID (PUID:PGID)" >&2
    if ! error="$(chown -R "$PUID:$PGID" "$DATA" 2>&1)"; then
        fail "cannot give $DATA ($(describe "$DATA")) to $PUID:$PGID:" \
            "$(echo "$error" | head -n 1 | sed 's/^chown: //'); $(advice)"
    fi
fi
check_writable setpriv --reuid="$PUID" --regid="$PGID" --clear-groups

export HOME=/tmp
exec setpriv --reuid="$PUID" --regid="$PGID" --clear-groups --no-new-privs \
    --inh-caps=-all --bounding-set=-all -- "$@"
