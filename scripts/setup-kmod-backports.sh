#!/bin/sh
# SPDX-License-Identifier: MIT
# Install Debian bookworm-backports' kernel (image + headers, 6.12.*) beside the
# stock 6.1 kernel, so `make kmod KVER=...` and `make check-kmod` can build and
# boot the module on both the oldest (register_shrinker) and the newest
# (shrinker_alloc) shrinker API.
#
#   scripts/setup-kmod-backports.sh         install if missing (root)
#   scripts/setup-kmod-backports.sh --kver  print the installed 6.12 KVER, or nothing
#
# The apt source for bookworm-backports reuses the mirror URI this machine
# already has configured for bookworm in /etc/apt/sources.list.d/debian.sources
# (or /etc/apt/sources.list); no mirror host is named here.
set -eu

kver() {
	ls -1 /lib/modules 2>/dev/null | grep -E '^6\.12\.' | while read -r v; do
		[ -d "/lib/modules/$v/build" ] && ls /boot/vmlinuz-"$v" >/dev/null 2>&1 && echo "$v"
	done | sort -V | tail -n 1
}

if [ "${1:-}" = --kver ]; then
	kver
	exit 0
fi
[ -z "$(kver)" ] || exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "setup-kmod-backports: the 6.12 kernel is missing; run as root" >&2
	exit 1
fi

# The URI of the stanza (deb822) or line (one-line format) that serves "bookworm".
uri=""
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
	uri=$(awk '
		/^[ \t]*$/ { if (u != "" && s) { print u; exit } u = ""; s = 0; next }
		/^URIs:/ { u = $2 }
		/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") s = 1 }
		END { if (u != "" && s) print u }' /etc/apt/sources.list.d/debian.sources | head -n 1)
fi
if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
	uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
fi
if [ -z "$uri" ]; then
	echo "setup-kmod-backports: no bookworm mirror URI configured in /etc/apt" >&2
	exit 1
fi

list=/etc/apt/sources.list.d/nestquant-backports.sources
if [ ! -f "$list" ]; then
	cat >"$list" <<EOT
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
fi

export DEBIAN_FRONTEND=noninteractive
echo "setup-kmod-backports: installing linux-image/headers-amd64 from bookworm-backports"
apt-get update -q >/dev/null
# The meta packages from backports pull the versioned 6.12 image and headers;
# the stock 6.1 image and headers stay installed (they are separate packages).
apt-get install -y -q --no-install-recommends -t bookworm-backports \
	linux-image-amd64 linux-headers-amd64 >/dev/null
v=$(kver)
if [ -z "$v" ]; then
	echo "setup-kmod-backports: installed, but no 6.12 kernel with a build tree found" >&2
	exit 1
fi
echo "setup-kmod-backports: $v"
