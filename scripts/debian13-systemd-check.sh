#!/bin/sh
# Start the .deb's systemd units under a running systemd: a copy of the
# Debian 13 chroot of scripts/debian13-check.sh booted as a container
# (systemd-nspawn -b --private-network), Debian's apache2 with mod_status in
# it, a .deb made there by `make deb` from a clone of this checkout's HEAD
# installed, and then, each a line of the summary:
#   - apache-metrics-exporter-endpoint.service serves /metrics with the
#     proof's figures (accept queue: AF_NETLINK sock_diag; memory: /proc);
#   - apache-metrics-exporter.service pushes to an InfluxDB stand-in (a
#     transient unit on the container's loopback), and spools in the state
#     directory while that is down;
#   - apache-worker-reaper.timer starts; the service run once, then once with
#     a threshold every worker exceeds (a real kill, counted in its state file
#     and seen by the endpoint);
#   - systemd-analyze security of each unit, as loaded;
#   - the package's upgrade try-restarts a running unit, removal stops it,
#     purge removes the state directory.
#
#   scripts/debian13-systemd-check.sh     (after scripts/debian13-check.sh)
#
# As root; not run by CI (see CONTRIBUTING.md, "Debian 13"). About 10 minutes.
# - The container's root is CHECK_DIR/nspawn-root, a fresh copy of the chroot
#   CHECK_DIR/root every run (that one is not changed, and may be in use by
#   a debian13-check.sh's make test meanwhile); dbus, systemd-sysv, apache2
#   and curl are installed in the copy, and the .deb is made there (network
#   needed, as for debian13-check.sh), before it boots without a network.
#   Uncommitted changes are not in the clone: commit first.
# - --private-network: the container has its own loopback and nothing else;
#   its Apache listens on its own port 80, never the host's.
# - The container is powered off at the end (also on failure or Ctrl-C);
#   systemd-nspawn unmounts what it mounted. Only the systemd-nspawn this
#   script started is signalled, by its PID.
# - A host without systemd as PID 1 (a container, a CI runner): the container
#   is not registered with machined (--register=no --keep-unit) and gets a
#   cgroup2 hierarchy of its own (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1):
#   systemd 257 refuses to boot on the cgroup v1/hybrid layout such hosts have.
# - Logs and the summary: CHECK_DIR/logs/systemd-*.log, systemd-summary.txt.
#
# Environment: CHECK_DIR (default /tmp/ame-debian13). Exit status 0 when
# every check passed.
set -eu

CHECK_DIR=${CHECK_DIR:-/tmp/ame-debian13}
SRC_ROOT=$CHECK_DIR/root
ROOT=$CHECK_DIR/nspawn-root
LOGS=$CHECK_DIR/logs
SUMMARY=$LOGS/systemd-summary.txt
CLONE=/srv/apache-metrics-exporter
MACHINE=ame-systemd-check
STATE=/var/lib/apache-metrics-exporter
UNITS="apache-metrics-exporter-endpoint.service apache-metrics-exporter.service apache-worker-reaper.service"

say() { printf 'debian13-systemd-check: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (systemd-nspawn)"
for tool in systemd-nspawn nsenter findmnt git; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install systemd-container util-linux git)"
done
[ -f "$CHECK_DIR/.debootstrap-done" ] || die "no chroot in $SRC_ROOT: run scripts/debian13-check.sh first (STEPS=deb is enough)"
[ -f "$SRC_ROOT/usr/bin/dpkg-buildpackage" ] || say "note: no build tools in $SRC_ROOT yet: make deb installs them"
SRC=$(cd "$(dirname "$0")/.." && pwd)
REV=$(git -C "$SRC" rev-parse HEAD)
[ -z "$(git -C "$SRC" status --porcelain)" ] || say "warning: uncommitted changes in $SRC are not in the .deb (the clone is of $REV)"

mounts_below() {
    findmnt -rn -o TARGET | awk -v r="$(readlink -f "$1")" 'index($0, r "/") == 1 || $0 == r'
}
[ -z "$(mounts_below "$ROOT")" ] || die "something is mounted below $ROOT (a container still running?)"
# A debian13-check.sh still running (its make test) may go on: the copy leaves
# its mounts out (--one-file-system). Not while it installs packages.
[ -z "$(mounts_below "$SRC_ROOT")" ] || say "warning: $SRC_ROOT is in use (debian13-check.sh running?); copying it anyway"

mkdir -p "$LOGS"
rm -rf --one-file-system "$ROOT"
say "copying $SRC_ROOT to $ROOT"
# Not /tmp (a running make test's files come and go there) nor /srv (the clone).
mkdir -m 0755 "$ROOT"
for entry in "$SRC_ROOT"/* "$SRC_ROOT"/.[!.]*; do
    case ${entry##*/} in tmp|srv|'.[!.]*') continue ;; esac
    cp -a --one-file-system "$entry" "$ROOT/"
done
mkdir -m 1777 "$ROOT/tmp"
mkdir -m 0755 "$ROOT/srv"
git clone -q --no-hardlinks "$SRC" "$ROOT$CLONE"
git -C "$ROOT$CLONE" checkout -q --detach "$REV"

# Packages a booted Debian has: installed in the copy by chroot, in a mount
# namespace of our own (its /proc unmounted with it).
say "installing dbus systemd-sysv apache2 curl and making the .deb of $REV in the copy (log: $LOGS/systemd-packages.log)"
unshare --mount --propagation private sh -c "
    mount -t proc proc '$ROOT/proc'
    mount --bind /dev '$ROOT/dev'
    mount --bind /dev/pts '$ROOT/dev/pts'
    chroot '$ROOT' /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends dbus systemd-sysv apache2 curl \
            && cd $CLONE && make deb'
    rc=\$?
    umount '$ROOT/dev/pts' '$ROOT/dev' '$ROOT/proc'
    exit \$rc" > "$LOGS/systemd-packages.log" 2>&1 \
    || { tail -n 5 "$LOGS/systemd-packages.log" >&2; die "installing packages or make deb in $ROOT failed"; }
deb=$(cd "$ROOT$CLONE/dist" && ls apache-metrics-exporter_*_all.deb)
cp "$ROOT$CLONE/dist/$deb" "$ROOT/root/"
# Nothing of the copy's packages may start at boot that the checks do not name.
chroot "$ROOT" systemctl disable -q apache-htcacheclean.service 2>/dev/null || true

# A stand-in for InfluxDB's /api/v2/write: 204, the body appended to a file.
cat > "$ROOT/root/influx-standin.py" <<'EOF'
import gzip
import http.server

class Write(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        with open("/root/influx-received.txt", "ab") as f:
            f.write(body + b"\n")
        self.send_response(204)
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", 8086), Write).serve_forever()
EOF

# --- the container --------------------------------------------------------------------------
NSPAWN_PID=
# systemd-nspawn keeps its locks in /run/systemd/nspawn; where /run is no
# tmpfs (a host without systemd) they outlive it: removed if made here.
[ -d /run/systemd/nspawn ] && made_run_dir=no || made_run_dir=yes
stop_container() {
    [ -n "$NSPAWN_PID" ] || return 0
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
        in_ct systemctl poweroff >/dev/null 2>&1 || true
        for _ in $(seq 1 30); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 1; done
        # systemd-nspawn turns SIGTERM into a clean shutdown of the container.
        kill -0 "$NSPAWN_PID" 2>/dev/null && kill -TERM "$NSPAWN_PID" 2>/dev/null
        for _ in $(seq 1 20); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 1; done
        kill -0 "$NSPAWN_PID" 2>/dev/null && kill -KILL "$NSPAWN_PID" 2>/dev/null
    fi
    wait "$NSPAWN_PID" 2>/dev/null || true
    NSPAWN_PID=
    [ -z "$(mounts_below "$ROOT")" ] || say "still mounted below $ROOT: $(mounts_below "$ROOT" | tr '\n' ' ')"
    if [ "$made_run_dir" = yes ]; then
        rmdir /run/systemd/nspawn/propagate /run/systemd/nspawn/locks /run/systemd/nspawn 2>/dev/null || true
    fi
}
cleanup() {
    rc=$?
    stop_container
    [ -f "$SUMMARY" ] && cat "$SUMMARY"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

set --
if [ ! -d /run/systemd/system ]; then
    set -- --register=no --keep-unit
    export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
fi
say "booting $ROOT (log: $LOGS/systemd-boot.log)"
systemd-nspawn -q -b -D "$ROOT" -M "$MACHINE" --private-network --console=pipe "$@" \
    < /dev/null > "$LOGS/systemd-boot.log" 2>&1 &
NSPAWN_PID=$!

leader() { pgrep -P "$NSPAWN_PID" | head -n 1; }
in_ct() {
    nsenter -t "$(leader)" -a /usr/bin/env -i LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER= \
        SYSTEMD_COLORS=0 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
# Poll a shell condition inside the container for up to $1 seconds.
wait_for() {
    limit=$1; shift
    for _ in $(seq 1 "$limit"); do
        in_ct sh -c "$*" >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}

for _ in $(seq 1 90); do
    if [ -n "$(leader)" ]; then
        case $(in_ct systemctl is-system-running 2>/dev/null) in running|degraded) break ;; esac
    fi
    kill -0 "$NSPAWN_PID" 2>/dev/null || die "the container stopped while booting ($LOGS/systemd-boot.log)"
    sleep 1
done

: > "$SUMMARY"
status=0
pass() { printf 'PASS   %s\n' "$*" >> "$SUMMARY"; }
fail() { printf 'FAIL   %s\n' "$*" >> "$SUMMARY"; status=1; }
metrics() { in_ct curl -fsS --max-time 10 http://127.0.0.1:9117/metrics; }

state=$(in_ct systemctl is-system-running 2>/dev/null || true)
printf 'Debian %s, systemd %s booted in a container (%s) on Debian %s; %s of %s\n' \
    "$(cat "$ROOT/etc/debian_version")" "$(in_ct sh -c 'systemctl --version | head -n 1 | cut -d" " -f2')" \
    "$state" "$(cat /etc/debian_version)" "$deb" "$REV" >> "$SUMMARY"
case $state in
    running) ;;
    *) fail "boot: $(in_ct systemctl --failed --no-legend --plain | tr '\n' ' ')" ;;
esac

in_ct sh -c 'a2enmod -q status && systemctl start apache2' > "$LOGS/systemd-apache.log" 2>&1 \
    && wait_for 20 "curl -fsS 'http://127.0.0.1/server-status?auto' | grep -q '^ServerMPM:'" \
    || die "Apache with mod_status did not start in the container ($LOGS/systemd-apache.log)"

in_ct sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/$deb" > "$LOGS/systemd-deb.log" 2>&1 \
    || die "apt-get install of $deb in the container failed ($LOGS/systemd-deb.log)"
printf 'mytoken\n' > "$ROOT/etc/apache-metrics-exporter.token"
chmod 600 "$ROOT/etc/apache-metrics-exporter.token"
cat >> "$ROOT/etc/apache-metrics-exporter.conf" <<'EOF'
url = [http://127.0.0.1/server-status]
influxdb-url = http://127.0.0.1:8086
influxdb-org = check
influxdb-bucket = apache
influxdb-token-file = /etc/apache-metrics-exporter.token
max-memory-idle = 512M
max-time = 5m
EOF

# --- the scrape endpoint: the proof's figures need AF_NETLINK and /proc ----------------------
in_ct systemctl start apache-metrics-exporter-endpoint.service
if wait_for 20 "curl -fsS http://127.0.0.1:9117/metrics | grep -q '^apache_up 1'"; then
    metrics > "$LOGS/systemd-endpoint.prom" 2>&1 || true
    missing=
    # apache_restarts_total: the collector state written in the state directory.
    for series in 'apache_accept_queue_limit_all' 'apache_processes{state="all"}' \
            'apache_group_memory_max_bytes{group="native"}' 'apache_restarts_total{kind="graceful"}'; do
        grep -qF "$series " "$LOGS/systemd-endpoint.prom" || missing="$missing $series"
    done
    if [ -z "$missing" ]; then
        pass "endpoint: /metrics with apache_up 1, accept queue (sock_diag), worker memory (/proc), restart counts (state directory) ($(grep -vc '^#' "$LOGS/systemd-endpoint.prom") samples)"
    else
        fail "endpoint: the sandbox lost:$missing (logs/systemd-endpoint.prom)"
    fi
else
    fail "endpoint: no apache_up 1 on 127.0.0.1:9117 ($(in_ct journalctl -u apache-metrics-exporter-endpoint -o cat -n 3 | tr '\n' ' '))"
fi

# --- the push: a write to the stand-in, then the spool in the state directory -------------
# The shipped --interval is 60s; a drop-in shortens it (the sandbox is the unit's own).
in_ct sh -c 'mkdir -p /run/systemd/system/apache-metrics-exporter.service.d && printf "[Service]\nExecStart=\nExecStart=/usr/bin/apache-metrics-exporter --format influxdb --interval 3s --spool-dir /var/lib/apache-metrics-exporter/spool\n" > /run/systemd/system/apache-metrics-exporter.service.d/interval.conf && systemctl daemon-reload'
in_ct systemd-run -q --unit=influx-standin python3 /root/influx-standin.py
wait_for 10 "curl -s -o /dev/null http://127.0.0.1:8086/" || true
in_ct systemctl start apache-metrics-exporter.service
if wait_for 30 "grep -q '^apache,' /root/influx-received.txt"; then
    pass "push: points written to the InfluxDB stand-in ($(grep -c . "$ROOT/root/influx-received.txt") lines)"
else
    fail "push: nothing written ($(in_ct journalctl -u apache-metrics-exporter -o cat -n 3 | tr '\n' ' '))"
fi
in_ct systemctl stop influx-standin.service
if wait_for 30 "ls $STATE/spool/*.lp"; then
    pass "push: InfluxDB down, points spooled in $STATE/spool ($(ls "$ROOT$STATE/spool" | grep -c '\.lp$') files)"
else
    fail "push: InfluxDB down and nothing spooled ($(in_ct journalctl -u apache-metrics-exporter -o cat -n 3 | tr '\n' ' '))"
fi
in_ct sh -c 'rm -r /run/systemd/system/apache-metrics-exporter.service.d && systemctl daemon-reload'

# --- the reaper: the timer, a run, a real kill -------------------------------------------------
in_ct systemctl start apache-worker-reaper.timer
if in_ct systemctl is-active -q apache-worker-reaper.timer; then
    pass "reaper timer active: $(in_ct systemctl list-timers --no-legend apache-worker-reaper.timer | head -n 1 | tr -s ' ')"
else
    fail "reaper timer not active"
fi
if in_ct systemctl start apache-worker-reaper.service && [ -s "$ROOT$STATE/reaper-state.json" ]; then
    pass "reaper run: $(in_ct journalctl -u apache-worker-reaper.service -o cat -n 20 | grep 'apache-worker-reaper:' | tail -n 1)"
else
    fail "reaper run ($(in_ct journalctl -u apache-worker-reaper.service -o cat -n 3 | tr '\n' ' '))"
fi
# Signalling www-data's workers from the sandbox: a threshold every worker exceeds.
in_ct sh -c 'mkdir -p /run/systemd/system/apache-worker-reaper.service.d && printf "[Service]\nExecStart=\nExecStart=/usr/bin/apache-worker-reaper --max-memory-idle 1M --max-memory-active 1M --grace 3s\n" > /run/systemd/system/apache-worker-reaper.service.d/kill.conf && systemctl daemon-reload'
in_ct systemctl start apache-worker-reaper.service || true
in_ct sh -c 'rm -r /run/systemd/system/apache-worker-reaper.service.d && systemctl daemon-reload'
killed=$(metrics 2>/dev/null | awk '/^apache_reaper_kills_total/ { n += $2 } END { print n + 0 }')
if [ "$killed" -ge 1 ]; then
    pass "reaper kill: $killed workers killed, counted, reported by the endpoint ($(in_ct journalctl -u apache-worker-reaper.service -o cat -n 20 | grep 'apache-worker-reaper: info: killed' | tail -n 1))"
else
    fail "reaper kill: none counted ($(in_ct journalctl -u apache-worker-reaper.service -o cat -n 3 | tr '\n' ' '))"
fi

# --- systemd-analyze security, as loaded ---------------------------------------------------
for unit in $UNITS; do
    level=$(in_ct systemd-analyze security --no-pager "$unit" | sed -n 's/.*Overall exposure level for [^:]*: //p')
    printf '       systemd-analyze security %s: %s\n' "$unit" "$level" >> "$SUMMARY"
done

# --- the package's own handling of running units ---------------------------------------------
before=$(in_ct systemctl show -P MainPID apache-metrics-exporter-endpoint.service)
in_ct sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall /root/$deb" >> "$LOGS/systemd-deb.log" 2>&1
after=$(in_ct systemctl show -P MainPID apache-metrics-exporter-endpoint.service)
if [ "$before" != "$after" ] && [ "$after" != 0 ] && in_ct systemctl is-active -q apache-metrics-exporter-endpoint.service; then
    pass "upgrade (reinstall) try-restarted the running endpoint (PID $before, then $after)"
else
    fail "upgrade (reinstall): endpoint PID $before, then $after ($(in_ct systemctl is-active apache-metrics-exporter-endpoint.service))"
fi
in_ct systemctl start apache-metrics-exporter.service
in_ct sh -c "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q apache-metrics-exporter" >> "$LOGS/systemd-deb.log" 2>&1
running=
for unit in $UNITS apache-worker-reaper.timer; do
    in_ct systemctl is-active -q "$unit" && running="$running $unit"
done
if [ -z "$running" ]; then pass "remove stopped every unit"; else fail "remove left running:$running"; fi
in_ct sh -c "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q apache-metrics-exporter" >> "$LOGS/systemd-deb.log" 2>&1
if [ -e "$ROOT$STATE" ]; then fail "purge left $STATE"; else pass "purge removed $STATE"; fi

exit "$status"
