#!/usr/bin/env bash
# Prints the Debian packages of the groups named (dev/packages.txt), one line.
set -euo pipefail
cd "$(dirname "$0")"
for group in "$@"; do
  sed -n "s/#.*//; s/^$group://p" packages.txt
done | tr -s ' \n' '  ' | sed 's/^ //; s/ $//'
echo
