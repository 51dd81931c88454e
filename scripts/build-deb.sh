#!/bin/sh
# `make deb`: the Debian package, built from the sdist that `make dist` made.
#
#   scripts/build-deb.sh [OUTDIR]        (default: dist/, where the sdist is)
#
# The sdist is unpacked in a temporary directory, packaging/debian becomes its
# debian/, and debian/changelog is written there with the sdist's version (one
# place: apache_metrics_exporter/__init__.py) plus "-DEB_REVISION" (default 1),
# so the checkout is never written into. Then dpkg-buildpackage -b, then
# lintian (errors fail the build; warnings are printed, each one explained in
# CONTRIBUTING.md or overridden with its reason). The .deb goes to OUTDIR.
#
# Environment: SDIST (the sdist to build from, default the one in OUTDIR),
# DEB_REVISION, SOURCE_DATE_EPOCH (the changelog's date; default the sdist's
# mtime), LINTIAN=0 to skip lintian. The build downloads the vendored wheels
# (packaging/debian/vendor-requirements.txt, pinned by hash) from the package
# index pip is configured with; PIP_FIND_LINKS=DIR PIP_NO_INDEX=1 takes them
# from DIR instead.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$root/dist}" && cd "${1:-$root/dist}" && pwd)
revision=${DEB_REVISION:-1}

if [ -z "${SDIST:-}" ]; then
    set -- "$out"/apache[-_]metrics[-_]exporter-*.tar.gz
    if [ "$#" != 1 ] || [ ! -f "$1" ]; then
        echo "build-deb: need exactly one sdist in $out (found: $*); run make dist first" >&2
        exit 1
    fi
    SDIST=$1
fi
for tool in dpkg-buildpackage dh dh_python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build-deb: $tool is missing; run make deps (debhelper, dh-python, lintian)" >&2
        exit 1
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
tar -xzf "$SDIST" -C "$work"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d)
cp -r "$src/packaging/debian" "$src/debian"

version=$(sed -n 's/^Version: //p' "$src/PKG-INFO")
# PEP 440 pre-releases sort before the release in Debian only with a tilde.
upstream=$(printf '%s\n' "$version" | sed -E 's/\.?(a|b|rc|dev)([0-9]*)$/~\1\2/')
maintainer=$(sed -n 's/^Maintainer: //p' "$src/debian/control")
epoch=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$SDIST")}
cat > "$src/debian/changelog" <<CHANGELOG
apache-metrics-exporter ($upstream-$revision) unstable; urgency=medium

  * Release $version, built by make deb from the sdist (the version comes
    from apache_metrics_exporter/__init__.py; the changes are in
    /usr/share/doc/apache-metrics-exporter/changelog.gz).

 -- $maintainer  $(date -u -R -d "@$epoch")
CHANGELOG

(cd "$src" && SOURCE_DATE_EPOCH=$epoch dpkg-buildpackage -b -us -uc) >"$work/build.log" 2>&1 || {
    tail -n 40 "$work/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed (the last lines are above)" >&2
    exit 1
}
deb="$work/apache-metrics-exporter_${upstream}-${revision}_all.deb"
if [ "${LINTIAN:-1}" != 0 ]; then
    lintian --fail-on error --display-info "$deb" || {
        echo "build-deb: lintian found errors in $(basename "$deb")" >&2
        exit 1
    }
fi
cp "$deb" "$out/"
echo "$out/$(basename "$deb")"
