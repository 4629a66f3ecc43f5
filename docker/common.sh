# Shell helpers shared by the container entry scripts of the test fleet
# (sourced, not run). Paths: $UPKEEP_FLEET is the shared volume that the
# init service fills at first start.

FLEET="${UPKEEP_FLEET:-/fleet}"
PORT="${UPKEEP_PORT:-18830}"
BROKER_URL="tcp://127.0.0.1:${PORT}"

log() { printf '%s upkeep-docker[%s]: %s\n' "$(date -u +%H:%M:%S)" "${ROLE:-?}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# wait_for SECONDS CMD...: runs CMD once a second until it succeeds; fails
# after SECONDS.
wait_for() {
  local left="$1"
  shift
  until "$@"; do
    left=$((left - 1))
    [ "$left" -gt 0 ] || return 1
    sleep 1
  done
}

fleet_ready() { [ -f "$FLEET/ready" ]; }

# Waits for the init service to have filled the volume.
wait_fleet() {
  wait_for "${UPKEEP_WAIT_S:-180}" fleet_ready || die "$FLEET/ready did not appear; did the init service run?"
}

# random_hex BYTES: that many random bytes as lower-case hex.
random_hex() { od -An -N "$1" -tx1 /dev/urandom | tr -d ' \n'; }

# port_open PORT [HOST]: true when something accepts TCP connections on
# HOST:PORT (default 127.0.0.1).
port_open() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# This container's id: the name of its directory under /var/lib/docker/containers,
# which its /etc/hostname is mounted from (works with cgroup v1 and v2, and with
# host networking, where the hostname is the host's).
container_id() {
  sed -n 's|.*/containers/\([0-9a-f]\{64\}\)/hostname .*|\1|p' /proc/self/mountinfo | head -n 1
}

# has_socket PID PORT STATE: true when process PID holds a TCP socket in
# STATE (01 established, 0A listening) whose remote (established) or local
# (listening) port is PORT. Read from /proc, so it needs PID's user; it opens
# no connection (a probe connection would fill the broker's log).
has_socket() {
  local pid="$1" hex inodes=" " fd link col=3
  hex=$(printf '%04X' "$2")
  [ "$3" != 0A ] || col=2
  for fd in /proc/"$pid"/fd/*; do
    link=$(readlink "$fd" 2>/dev/null) || continue
    case "$link" in socket:\[*\]) inodes+="${link:8:-1} " ;; esac
  done
  # /proc/net/tcp{,6}: sl local rem st ... inode (10th field)
  awk -v hex="$hex" -v st="$3" -v col="$col" -v inodes="$inodes" '
    $4 == st && substr($col, length($col) - 3) == hex && index(inodes, " " $10 " ") { found = 1 }
    END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
