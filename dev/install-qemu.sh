#!/usr/bin/env bash
# Makes qemu-system-x86_64 available for the QEMU tests, without touching a newer QEMU the machine
# already has. Debian 12 images with qemu-utils from backports (10.x) cannot take Debian 12's
# qemu-system-x86 (7.2): qemu-utils >= 8 "Breaks: qemu-system-common (<< 8.0)", and apt would
# remove qemu-utils to install it. Then this script installs QEMU 7.2 privately instead: it
# unpacks Debian's qemu-system-x86/-common/-data packages into /opt/nixos-pxe/qemu-VERSION,
# installs only their libraries with apt, and puts a wrapper at /usr/local/bin/qemu-system-x86_64
# that points QEMU at its modules and firmware. On a machine without the conflict, apt installs
# qemu-system-x86 as usual. Nothing is removed either way.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if command -v qemu-system-x86_64 >/dev/null; then
  echo "install-qemu: $(command -v qemu-system-x86_64): $(qemu-system-x86_64 --version | head -1)"
  exit 0
fi
if ! apt-get install -s -q --no-install-recommends qemu-system-x86 | grep -q '^Remv '; then
  apt-get install -y -q --no-install-recommends qemu-system-x86
  exit 0
fi
echo "install-qemu: apt would remove packages to install qemu-system-x86:" \
  "$(apt-get install -s -q --no-install-recommends qemu-system-x86 | sed -n 's/^Remv \([^ ]*\).*/\1/p' | tr '\n' ' ')" \
  "- installing it privately instead" >&2
version=$(apt-cache policy qemu-system-x86 | sed -n 's/^ *Candidate: //p')
prefix=/opt/nixos-pxe/qemu-${version//[:+~]/_}
if [ ! -x "$prefix/usr/bin/qemu-system-x86_64" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -q qemu-system-x86 qemu-system-common qemu-system-data 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
  ls "$work"/qemu-system-x86_*.deb >/dev/null
  # The libraries the binaries link, and the firmware packages they reference (seabios, ipxe-qemu).
  deps=$(for deb in "$work"/*.deb; do dpkg-deb -f "$deb" Depends; done \
    | tr ',' '\n' | sed 's/(.*)//; s/|.*//; s/[[:space:]]//g' | grep -v '^qemu-system' | sort -u)
  # shellcheck disable=SC2086 # one word per package
  apt-get install -y -q --no-install-recommends $deps
  mkdir -p "$prefix.tmp"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$prefix.tmp"; done
  rm -rf "$prefix" && mv "$prefix.tmp" "$prefix"
fi
mkdir -p /usr/local/bin
cat > /usr/local/bin/qemu-system-x86_64 <<WRAPPER
#!/bin/sh
# Written by nixos-pxe-installer's dev/install-qemu.sh: Debian's QEMU $version, unpacked in
# $prefix because the installed qemu-utils conflicts with its package.
export QEMU_MODULE_DIR=$prefix/usr/lib/x86_64-linux-gnu/qemu
exec $prefix/usr/bin/qemu-system-x86_64 -L $prefix/usr/share/qemu -L /usr/share/seabios -L /usr/lib/ipxe/qemu "\$@"
WRAPPER
chmod 755 /usr/local/bin/qemu-system-x86_64
echo "install-qemu: /usr/local/bin/qemu-system-x86_64: $(/usr/local/bin/qemu-system-x86_64 --version | head -1)"
