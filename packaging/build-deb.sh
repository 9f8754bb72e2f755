#!/bin/sh
# packaging/build-deb.sh OUTDIR — build the Debian packages of the working
# tree and lint them (run by `make package`). It never installs anything on
# the machine it runs on: no dpkg -i/-r/-P here.
#
#  1. copy the source tree (tracked and untracked files git does not ignore;
#     never build/) to OUTDIR/src/warmpool-VERSION and lay out debian/ there
#     from packaging/debian/: the source tree itself never gets a debian/;
#  2. dpkg-buildpackage -us -uc -b; the .deb files end up in OUTDIR;
#  3. lintian: any error fails (OUTDIR/lintian.txt has the full report).
#
# Installing, upgrading and purging the packages is checked in a throwaway
# root by tests/integration/test_packaging.py (test_deb_*): an overlay of /
# in a private mount namespace, so the host's dpkg database, /etc and /run
# are never written.
set -eu

out=${1:?usage: build-deb.sh OUTDIR}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

version=$(sed -n 's/^#define WARMPOOL_VERSION "\(.*\)"/\1/p' lib/version.h)
debversion=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
if [ "${debversion%%-*}" != "$version" ]; then
	echo "build-deb: packaging/debian/changelog is at $debversion but lib/version.h says $version:" >&2
	echo "build-deb: add a changelog entry (dch -c packaging/debian/changelog -v $version)" >&2
	exit 1
fi

say() { printf '== %s\n' "$*"; }
fail() { printf 'build-deb: FAIL: %s\n' "$*" >&2; exit 1; }

# 1. scratch copy
rm -rf "$out"
src="$out/src/warmpool-$version"
mkdir -p "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git ls-files -z --cached --others --exclude-standard |
		xargs -0 -I{} sh -c 'test -e "$1" && printf "%s\0" "$1"' _ {} |
		tar --null -T - -cf - | tar -C "$src" -xf -
else
	tar --exclude=./build --exclude=./.git -cf - . | tar -C "$src" -xf -
fi
rm -rf "$src/build" "$src/debian"
cp -r packaging/debian "$src/debian"
say "source tree laid out in $src"

# 2. build
say "dpkg-buildpackage -us -uc -b"
(cd "$src" && dpkg-buildpackage -us -uc -b -jauto) >"$out/build.log" 2>&1 || {
	tail -40 "$out/build.log" >&2
	fail "dpkg-buildpackage failed (full log: $out/build.log)"
}
mv "$out"/src/*.deb "$out"/src/*.changes "$out"/src/*.buildinfo "$out"/
changes=$(ls "$out"/*.changes)
for f in "$out"/*.deb; do
	say "$(basename "$f")"
	dpkg-deb -c "$f" | awk '{print "   " $1 " " $6}'
done

# 3. lintian
say "lintian"
lintian --fail-on error --display-info "$changes" >"$out/lintian.txt" 2>&1 || {
	cat "$out/lintian.txt" >&2
	fail "lintian reported errors"
}
grep -v 'running with root privileges' "$out/lintian.txt" | sed 's/^/   /' || echo "   no tags"

say "packages in $out"
