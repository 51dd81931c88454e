#!/bin/sh
# Prove the .deb, `make demo` and `make test` on Debian 13 (trixie) from a
# Debian 12 host: a debootstrap chroot, a clean clone of this checkout's HEAD
# in it, and inside: `make deb`, `apt-get install` of that .deb (its commands
# run, then purged, nothing left), `make demo`, `make test`.
#
#   scripts/debian13-check.sh            (as root; an hour or more on 2 CPUs)
#
# Not run by CI (too long); see CONTRIBUTING.md ("Debian 13").
#
# - The chroot is CHECK_DIR/root (default /tmp/ame-debian13/root), made once
#   by debootstrap from the mirror this host's apt uses (read from
#   /etc/apt/sources.list*; MIRROR= and SECURITY_MIRROR= to choose) and reused
#   by later runs (FRESH=1 makes it again). The clone is made anew every run
#   (uncommitted changes are not in it: commit first).
# - Everything runs in a mount namespace of its own (unshare): the root
#   itself (bound onto itself), /proc, /sys,
#   /dev, /dev/pts and a /dev/shm are mounted into the chroot there and
#   unmounted on exit, also on failure or Ctrl-C, together with whatever a
#   test mounted below the chroot; the host's mount table never sees them.
# - Processes left running in the chroot after a step (they can only have
#   been started by this script: their root directory is the chroot) are
#   sent SIGTERM, then SIGKILL. Nothing outside the chroot is started,
#   stopped or changed, except CHECK_DIR.
# - The host's locally added certificate authorities
#   (/usr/local/share/ca-certificates) are added to the chroot's, and pip,
#   Python and requests are pointed at Debian's bundle (pip's own would not
#   know them).
# - Logs and the summary go to CHECK_DIR/logs/ (deb.log, demo.log,
#   test.log, summary.txt); the summary is printed at the end.
#
# Environment: CHECK_DIR, SUITE (default trixie), STEPS (default
# "deb demo test"), PYTEST_ARGS (passed to make test), FRESH=1, MIRROR,
# SECURITY_MIRROR. Exit status: 0 when every step passed.
set -eu

SUITE=${SUITE:-trixie}
CHECK_DIR=${CHECK_DIR:-/tmp/ame-debian13}
ROOT=$CHECK_DIR/root
LOGS=$CHECK_DIR/logs
STEPS=${STEPS:-deb demo test}
SRC=$(cd "$(dirname "$0")/.." && pwd)
# Inside the chroot; not under /root (0700): tests run the venv's python as
# nobody and www-data, as on a host whose checkout others can read.
CLONE=/srv/apache-metrics-exporter

BASE_PACKAGES="make git ca-certificates debian-archive-keyring iproute2 systemd"

say() { printf 'debian13-check: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

if [ "$(id -u)" != 0 ]; then
    die "needs root (debootstrap, chroot, mount)"
fi
for tool in debootstrap unshare chroot findmnt git; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install debootstrap util-linux git)"
done

# --- the mirror this host's apt uses, for a suite ------------------------------------------
# One-line sources ("deb [opts] URI SUITE COMPONENTS") and deb822 .sources
# ("URIs:", "Suites:", "Enabled: no" skipped).
mirror_for() {
    suite=$1
    {
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            awk -v s="$suite" '$1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == s) print $i }' "$f"
        done
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            awk -v s="$suite" 'BEGIN { RS = "" } {
                uri = ""; ok = 0; off = 0
                n = split($0, line, "\n")
                for (k = 1; k <= n; k++) {
                    if (line[k] ~ /^URIs:/) { split(line[k], u, " "); uri = u[2] }
                    if (line[k] ~ /^Suites:/) {
                        m = split(line[k], w, " ")
                        for (j = 2; j <= m; j++) if (w[j] == s) ok = 1
                    }
                    if (line[k] ~ /^Enabled: *[Nn]o/) off = 1
                }
                if (ok && !off && uri != "") print uri }' "$f"
        done
    } | head -n 1
}

host_codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
MIRROR=${MIRROR:-$(mirror_for "$host_codename")}
SECURITY_MIRROR=${SECURITY_MIRROR:-$(mirror_for "$host_codename-security")}
[ -n "$MIRROR" ] || die "no Debian mirror for $host_codename in /etc/apt/sources.list*; set MIRROR="

# --- processes and mounts of the chroot ------------------------------------------------------
# PIDs whose root directory is the chroot: started by this script, nothing else.
chroot_pids() {
    real=$(readlink -f "$ROOT")
    for d in /proc/[0-9]*; do
        [ "$(readlink "$d/root" 2>/dev/null)" = "$real" ] && echo "${d#/proc/}"
    done
    return 0
}

stop_chroot_processes() {
    pids=$(chroot_pids)
    [ -n "$pids" ] || return 0
    say "stopping processes left in the chroot: $(echo $pids)"
    # shellcheck disable=SC2086 # one word per PID
    kill -TERM $pids 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [ -n "$(chroot_pids)" ] || return 0
        sleep 1
    done
    pids=$(chroot_pids)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
}

# Every mount point at or below the chroot, deepest first.
mounts_below() {
    findmnt -rn -o TARGET | awk -v r="$(readlink -f "$ROOT")" \
        'index($0, r "/") == 1 || $0 == r' | sort -r
}

unmount_all() {
    for _ in 1 2 3; do
        list=$(mounts_below)
        [ -n "$list" ] || return 0
        for m in $list; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
    done
    [ -z "$(mounts_below)" ] || say "still mounted below $ROOT: $(mounts_below | tr '\n' ' ')"
}

# --- inside the private mount namespace ------------------------------------------------------
if [ "${AME_DEBIAN13_INNER:-}" = 1 ]; then
    inner_cleanup() {
        rc=$?
        stop_chroot_processes
        unmount_all
        exit "$rc"
    }
    trap inner_cleanup EXIT
    trap 'exit 130' INT TERM
    # Nothing mounted here may propagate back to the host.
    mount --make-rprivate /
    # The chroot's / a mount point of its own, as a real root is: `ip -n` and
    # `ip netns exec` (tests/test_check.py) make it a slave mount and fail
    # ("Invalid argument") where it is a plain directory.
    mount --bind "$ROOT" "$ROOT"
    mount -t proc proc "$ROOT/proc"
    mount -t sysfs sysfs "$ROOT/sys"
    mount --bind /dev "$ROOT/dev"
    mount --bind /dev/pts "$ROOT/dev/pts"
    mount -t tmpfs -o mode=1777,nosuid,nodev shm "$ROOT/dev/shm"

    in_root() {
        chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            DEBIAN_FRONTEND=noninteractive PYTEST_ARGS="${PYTEST_ARGS:-}" \
            SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
            PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
            REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt "$@"
    }

    result() { printf '%-6s %s\n' "$1" "$2" >> "$LOGS/summary.txt"; }

    deb_install() {
        echo "== apt-get install ./dist/$1"
        in_root sh -c "cd $CLONE && apt-get install -y -q ./dist/$1" || return 1
        in_root dpkg -L apache-metrics-exporter > "$LOGS/deb-files.txt" || return 1
        for cmd in apache-metrics-exporter apache-worker-reaper apache-manager; do
            echo "== /usr/bin/$cmd --version"
            in_root "/usr/bin/$cmd" --version || return 1
        done
        echo "== apache-metrics-exporter against a closed port: Apache down is data, exit 0"
        in_root /usr/bin/apache-metrics-exporter --url http://127.0.0.1:9/server-status \
            --format tab --output /tmp/ame-deb-check.tab || return 1
        grep -q '^status-response' "$ROOT/tmp/ame-deb-check.tab" || return 1
        rm -f "$ROOT/tmp/ame-deb-check.tab"
        echo "== apt-get purge"
        in_root apt-get purge -y -q apache-metrics-exporter
    }

    step_deb() {
        # make deb, then the .deb as an administrator installs it: apt-get
        # install ./FILE, its three commands, purge, nothing of it left.
        if ! in_root sh -c "cd $CLONE && make deb" > "$LOGS/deb.log" 2>&1; then
            result FAIL "make deb (logs/deb.log: $(tail -n 1 "$LOGS/deb.log"))"
            return 1
        fi
        deb=$(cd "$ROOT$CLONE/dist" && ls apache-metrics-exporter_*_all.deb)
        lintian=$(grep -E '^[EWI]: apache-metrics-exporter' "$LOGS/deb.log" | sed 's/^/    /' || true)
        result PASS "make deb: $deb$(printf '\n%s' "$lintian")"
        if ! deb_install "$deb" > "$LOGS/deb-install.log" 2>&1; then
            result FAIL "deb install/run/purge (logs/deb-install.log: $(tail -n 1 "$LOGS/deb-install.log"))"
            return 1
        fi
        left=
        while read -r path; do
            [ -d "$ROOT$path" ] && continue
            [ -e "$ROOT$path" ] || [ -L "$ROOT$path" ] && left="$left $path"
        done < "$LOGS/deb-files.txt"
        for path in /var/lib/apache-metrics-exporter /etc/apache-metrics-exporter.conf \
                /etc/default/apache-metrics-exporter-endpoint; do
            [ -e "$ROOT$path" ] && left="$left $path"
        done
        if [ -n "$left" ] || in_root dpkg -s apache-metrics-exporter >/dev/null 2>&1; then
            result FAIL "deb purge left:$left"
            return 1
        fi
        result PASS "deb install, 3 commands run, purge: nothing left ($(wc -l < "$LOGS/deb-files.txt") paths checked)"
    }

    step_demo() {
        if in_root sh -c "cd $CLONE && make demo" > "$LOGS/demo.log" 2>&1; then
            result PASS "make demo ($(wc -l < "$LOGS/demo.log") lines, logs/demo.log)"
        else
            result FAIL "make demo (logs/demo.log: $(tail -n 1 "$LOGS/demo.log"))"
            return 1
        fi
    }

    step_test() {
        rc=0
        in_root sh -c "cd $CLONE && make test" > "$LOGS/test.log" 2>&1 || rc=$?
        line=$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$LOGS/test.log" | tail -n 1 || true)
        if [ "$rc" = 0 ]; then result PASS "make test: ${line:-?}"; else result FAIL "make test (exit $rc): ${line:-no pytest summary, see logs/test.log}"; fi
        grep -E '^(SKIPPED|FAILED|ERROR) ' "$LOGS/test.log" | sed 's/^/    /' >> "$LOGS/summary.txt" || true
        return "$rc"
    }

    : > "$LOGS/summary.txt"
    printf 'Debian %s in a chroot on Debian %s; clone of %s\n' \
        "$(cat "$ROOT/etc/debian_version")" "$(cat /etc/debian_version)" "$REV" >> "$LOGS/summary.txt"
    # A package an interrupted run left installed would make the .deb test skip.
    if in_root dpkg -s apache-metrics-exporter >/dev/null 2>&1; then
        say "purging the apache-metrics-exporter an earlier run left in the chroot"
        in_root apt-get purge -y -q apache-metrics-exporter > "$LOGS/purge-leftover.log" 2>&1 || true
    fi
    status=0
    for step in $STEPS; do
        say "step $step (log: $LOGS/$step.log)"
        "step_$step" || status=1
        stop_chroot_processes
    done
    exit "$status"
fi

# --- outside: the chroot, the clone, then the steps in their own namespace ------------------
mkdir -p "$CHECK_DIR" "$LOGS"
[ -z "$(mounts_below)" ] || die "something is mounted below $ROOT (an earlier run still going?): $(mounts_below | tr '\n' ' ')"
[ -z "$(chroot_pids)" ] || die "processes still run in $ROOT (an earlier run still going?): $(chroot_pids | tr '\n' ' ')"

if [ "${FRESH:-0}" = 1 ] || [ ! -f "$CHECK_DIR/.debootstrap-done" ]; then
    rm -rf --one-file-system "$ROOT" "$CHECK_DIR/.debootstrap-done"
    say "debootstrap $SUITE into $ROOT (log: $LOGS/debootstrap.log)"
    debootstrap --variant=minbase --include="$(echo $BASE_PACKAGES | tr ' ' ,)" \
        "$SUITE" "$ROOT" "$MIRROR" > "$LOGS/debootstrap.log" 2>&1 \
        || { tail -n 5 "$LOGS/debootstrap.log" >&2; die "debootstrap failed"; }
    touch "$CHECK_DIR/.debootstrap-done"
fi

# apt sources of the chroot: the same mirrors, the suite's updates and security.
rm -f "$ROOT/etc/apt/sources.list"
{
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$MIRROR" "$SUITE" "$SUITE"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [ -n "$SECURITY_MIRROR" ]; then
        printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$SECURITY_MIRROR" "$SUITE"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
} > "$ROOT/etc/apt/sources.list.d/debian.sources"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# Certificate authorities this host added locally (a TLS-inspecting proxy's,
# say) are trusted in the chroot too, or pip and apt over https fail there.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" update-ca-certificates > "$LOGS/ca-certificates.log" 2>&1 \
        || die "update-ca-certificates in the chroot failed ($LOGS/ca-certificates.log)"
fi
chroot "$ROOT" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get update -q > "$LOGS/apt-update.log" 2>&1 \
    || { tail -n 5 "$LOGS/apt-update.log" >&2; die "apt-get update in the chroot failed"; }

# What every Debian 13 host has but a minbase chroot lacks (the tests skip
# without them: ip and ss, systemctl and systemd-analyze), also in a reused root.
chroot "$ROOT" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends $BASE_PACKAGES > "$LOGS/base-packages.log" 2>&1 \
    || { tail -n 5 "$LOGS/base-packages.log" >&2; die "installing $BASE_PACKAGES in the chroot failed"; }

# A clean clone of the committed HEAD (never the working tree's edits).
REV=$(git -C "$SRC" rev-parse HEAD)
if [ -n "$(git -C "$SRC" status --porcelain)" ]; then
    say "warning: uncommitted changes in $SRC are not tested (the clone is of $REV)"
fi
rm -rf --one-file-system "$ROOT$CLONE"
git clone -q --no-hardlinks "$SRC" "$ROOT$CLONE"
git -C "$ROOT$CLONE" checkout -q --detach "$REV"

status=0
AME_DEBIAN13_INNER=1 REV=$REV CHECK_DIR=$CHECK_DIR STEPS=$STEPS \
    unshare --mount --propagation private sh "$0" || status=$?
# The namespace is gone with its last process; make sure of both.
stop_chroot_processes
[ -z "$(mounts_below)" ] || { say "unmounting what is left below $ROOT"; unmount_all; }
cat "$LOGS/summary.txt"
exit "$status"
