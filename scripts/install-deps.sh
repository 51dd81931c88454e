#!/bin/sh
# `make deps`: install the Debian packages the demo and the tests need.
#
#   scripts/install-deps.sh PACKAGE...
#
# - Only the packages that are not installed yet are installed; an installed
#   one is never upgraded (nor put on apt-get's command line: --no-upgrade).
#   apt may still upgrade a library when a new package needs a newer version.
# - No service is started by the install (a policy-rc.d that denies every
#   start, removed afterwards unless one was there already).
# - No service is left enabled at boot that was not enabled before: the
#   enabled systemd units (systemctl list-unit-files) and the SysV start links
#   (/etc/rc?.d/S*) are listed before and after; whatever the install enabled
#   is disabled again (systemctl disable, update-rc.d NAME disable), and, when
#   systemd runs, stopped if it runs now and did not before. Units that were
#   enabled before are not touched.
#
# For tests, the places it looks at can be moved: DEPS_ETC (default /etc),
# POLICY_RC_D (/usr/sbin/policy-rc.d), SYSTEMD_RUN (/run/systemd/system).
set -u

ETC=${DEPS_ETC:-/etc}
POLICY_RC_D=${POLICY_RC_D:-/usr/sbin/policy-rc.d}
SYSTEMD_RUN=${SYSTEMD_RUN:-/run/systemd/system}

missing=
for package in "$@"; do
    dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q 'install ok installed' \
        || missing="$missing $package"
done
if [ -z "$missing" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages:$missing (run as root, or install them)" >&2
    exit 1
fi

has_systemctl() { command -v systemctl >/dev/null 2>&1; }
systemd_runs() { [ -d "$SYSTEMD_RUN" ] && has_systemctl; }

# One line per thing enabled at boot: "systemd UNIT" or "sysv NAME".
enabled_at_boot() {
    {
        if has_systemctl; then
            systemctl list-unit-files --no-legend --no-pager --state=enabled 2>/dev/null \
                | awk 'NF { print "systemd " $1 }'
        fi
        for dir in "$ETC"/rc[S2345].d; do
            [ -d "$dir" ] && ls "$dir"
        done | sed -n 's/^S[0-9][0-9]*\(..*\)$/sysv \1/p'
    } | sort -u
}

running_units() {
    if systemd_runs; then
        systemctl list-units --no-legend --no-pager --plain --state=running 2>/dev/null \
            | awk 'NF { print $1 }' | sort -u
    fi
}

work=$(mktemp -d) || exit 1
planted=
cleanup() {
    if [ -n "$planted" ]; then rm -f "$POLICY_RC_D"; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

enabled_at_boot > "$work/enabled.before"
running_units > "$work/running.before"

if [ ! -e "$POLICY_RC_D" ]; then
    printf '#!/bin/sh\n# planted by apache-metrics-exporter make deps: start nothing\nexit 101\n' \
        > "$POLICY_RC_D" && chmod 755 "$POLICY_RC_D" && planted=1
fi

echo "installing Debian packages (missing ones only, no upgrades):$missing"
rc=0
apt-get update -q || rc=$?
if [ "$rc" = 0 ]; then
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --no-upgrade \
        $missing || rc=$?
fi

# Whatever the install enabled (also after a failed, partial install) goes back.
enabled_at_boot > "$work/enabled.after"
running_units > "$work/running.after"
comm -13 "$work/enabled.before" "$work/enabled.after" > "$work/enabled.new"
comm -13 "$work/running.before" "$work/running.after" > "$work/running.new"
disabled=
while read -r kind name; do
    case $kind in
        systemd)
            systemctl disable --quiet "$name" </dev/null
            if grep -qx "$name" "$work/running.new"; then
                systemctl stop "$name" </dev/null
            fi
            ;;
        sysv)
            # systemctl disable may have done this already (systemd-sysv-install).
            if ls "$ETC"/rc[S2345].d/S[0-9][0-9]"$name" >/dev/null 2>&1; then
                update-rc.d "$name" disable </dev/null >/dev/null
            fi
            ;;
    esac
    disabled="$disabled $name"
done < "$work/enabled.new"
if [ -n "$disabled" ]; then
    echo "disabled at boot again (the install had enabled them):$disabled"
fi
enabled_at_boot > "$work/enabled.final"
left=$(comm -13 "$work/enabled.before" "$work/enabled.final")
if [ -n "$left" ]; then
    echo "warning: still enabled at boot although they were not before:" $left >&2
    [ "$rc" = 0 ] && rc=1
fi
exit "$rc"
