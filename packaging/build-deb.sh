#!/bin/sh
# packaging/build-deb.sh OUTDIR — build the Debian packages of the working
# tree and check them (run by `make package`).
#
#  1. copy the source tree (tracked and untracked files git does not ignore;
#     never build/) to OUTDIR/src/warmpool-VERSION and lay out debian/ there
#     from packaging/debian/: the source tree itself never gets a debian/;
#  2. dpkg-buildpackage -us -uc -b; the .deb files end up in OUTDIR;
#  3. lintian: any error fails (OUTDIR/lintian.txt has the full report);
#  4. as root, unless WARMPOOL_DEB_INSTALL_CHECK=no: dpkg -i, check what the
#     package put in place (files, the warmpool user, the enabled unit, that
#     systemd-analyze verify is clean on the installed unit, that start is
#     skipped without a configuration), then dpkg -r and dpkg -P, checking
#     each leaves nothing behind. Refuses if warmpool is already installed.
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
deb=$(ls "$out"/warmpool_*.deb)
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

# 4. install / remove / purge
if [ "${WARMPOOL_DEB_INSTALL_CHECK:-yes}" = no ]; then
	say "install check skipped (WARMPOOL_DEB_INSTALL_CHECK=no)"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	say "install check skipped: needs root (dpkg -i)"
	exit 0
fi
if dpkg-query -W -f='${Status}' warmpool 2>/dev/null | grep -q 'installed'; then
	say "install check skipped: a warmpool package is already installed here"
	exit 0
fi
[ ! -e /etc/warmpool/warmpool.yaml ] ||
	fail "/etc/warmpool/warmpool.yaml exists: the install check needs a machine without one"

unitdir=/lib/systemd/system
say "dpkg -i $(basename "$deb")"
dpkg -i "$deb" >"$out/install.log" 2>&1 || { cat "$out/install.log" >&2; fail "dpkg -i failed"; }
for f in /usr/sbin/warmpoold /usr/sbin/warmpoolctl; do
	[ -x "$f" ] || fail "$f missing after install"
done
for f in $unitdir/warmpoold.service /usr/lib/sysusers.d/warmpool.conf \
	/usr/share/man/man8/warmpoold.8.gz /usr/share/man/man8/warmpoolctl.8.gz \
	/usr/share/man/man5/warmpool.yaml.5.gz /usr/share/doc/warmpool/examples/warmpool.yaml \
	/usr/share/doc/warmpool/examples/warmpoold.socket; do
	[ -f "$f" ] || fail "$f missing after install"
done
[ -d /etc/warmpool ] || fail "/etc/warmpool missing after install"
[ ! -e /etc/warmpool/warmpool.yaml ] || fail "the package must not ship /etc/warmpool/warmpool.yaml"
getent passwd warmpool >/dev/null || fail "postinst did not create the warmpool user"
getent group warmpool >/dev/null || fail "postinst did not create the warmpool group"
[ -L /etc/systemd/system/multi-user.target.wants/warmpoold.service ] &&
	[ "$(systemctl is-enabled warmpoold.service 2>/dev/null)" = enabled ] ||
	fail "postinst did not enable warmpoold.service"
echo "   files in place, user warmpool exists, warmpoold.service enabled"
/usr/sbin/warmpoold --version >/dev/null || fail "warmpoold --version"
/usr/sbin/warmpoold --check-config -c /usr/share/doc/warmpool/examples/warmpool.yaml >/dev/null ||
	fail "the shipped example configuration does not validate"
systemd-analyze verify $unitdir/warmpoold.service >"$out/verify.log" 2>&1 || {
	cat "$out/verify.log" >&2
	fail "systemd-analyze verify of the installed unit"
}
[ ! -s "$out/verify.log" ] || { cat "$out/verify.log" >&2; fail "systemd-analyze verify printed warnings"; }
echo "   systemd-analyze verify $unitdir/warmpoold.service: clean"
# Without a configuration the unit's condition fails: systemd skips the start
# (the unit stays inactive) instead of running a daemon that would exit 1.
if systemd-analyze condition --unit=warmpoold.service >"$out/condition.log" 2>&1; then
	cat "$out/condition.log" >&2
	fail "warmpoold.service conditions hold without /etc/warmpool/warmpool.yaml"
fi
grep -q 'ConditionPathExists=/etc/warmpool/warmpool.yaml.*fail' "$out/condition.log" ||
	{ cat "$out/condition.log" >&2; fail "unexpected systemd-analyze condition output"; }
echo "   without a configuration the start is skipped (ConditionPathExists fails)"

say "dpkg -r warmpool"
dpkg -r warmpool >>"$out/install.log" 2>&1 || { cat "$out/install.log" >&2; fail "dpkg -r failed"; }
for f in /usr/sbin/warmpoold /usr/sbin/warmpoolctl $unitdir/warmpoold.service; do
	[ ! -e "$f" ] || fail "$f still there after dpkg -r"
done
say "dpkg -P warmpool"
dpkg -P warmpool >>"$out/install.log" 2>&1 || { cat "$out/install.log" >&2; fail "dpkg -P failed"; }
[ ! -e /etc/systemd/system/multi-user.target.wants/warmpoold.service ] ||
	fail "the enable symlink survived the purge"
[ ! -e /etc/warmpool ] || fail "/etc/warmpool survived the purge"
dpkg-query -W warmpool >/dev/null 2>&1 && fail "dpkg still knows warmpool after the purge"
echo "   removed and purged cleanly (the warmpool system user stays, as sysusers users do)"

# The client library: a program builds against the -dev package with
# pkg-config and runs against the shared library.
libdeb=$(ls "$out"/libwarmpool0_*.deb 2>/dev/null || true)
devdeb=$(ls "$out"/libwarmpool-dev_*.deb 2>/dev/null || true)
if [ -n "$libdeb" ] && [ -n "$devdeb" ] && ! dpkg-query -W libwarmpool0 libwarmpool-dev >/dev/null 2>&1; then
	say "dpkg -i $(basename "$libdeb") $(basename "$devdeb")"
	dpkg -i "$libdeb" "$devdeb" >>"$out/install.log" 2>&1 || { cat "$out/install.log" >&2; fail "dpkg -i (library) failed"; }
	cat >"$out/client.c" <<'C'
#include <stdio.h>
#include <warmpool.h>
int main(void)
{
	struct wp_lease lease;
	int r = wp_checkout("/nonexistent/warmpool.sock", 100, &lease);
	printf("%s\n", wp_strerror(r));
	return r < 0 ? 0 : 1;
}
C
	# shellcheck disable=SC2046
	cc -o "$out/client" "$out/client.c" $(pkg-config --cflags --libs warmpool) ||
		fail "a client does not build with pkg-config warmpool"
	readelf -d "$out/client" | grep -q 'NEEDED.*libwarmpool\.so\.0' || fail "the client is not linked to libwarmpool.so.0"
	"$out/client" >/dev/null || fail "the client does not run"
	echo "   a client builds with \`pkg-config warmpool\` and runs against libwarmpool.so.0"
	dpkg -P libwarmpool-dev libwarmpool0 >>"$out/install.log" 2>&1 || { cat "$out/install.log" >&2; fail "dpkg -P (library) failed"; }
	[ ! -e /usr/include/warmpool.h ] || fail "warmpool.h survived the purge"
	echo "   removed and purged cleanly"
fi
say "packages in $out"
