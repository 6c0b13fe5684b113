# The first boot's report to the nixos-pxe boot server (nix/report-module.nix runs it, as the
# `script` of a oneshot unit: bash with `set -e`): POSTs `booted` with the running system's store
# path and the two secrets the installer left in the state file: the boot token, whose hash the
# installer's `installed` report carried (serve takes `booted` with it alone once it took that
# report), and the attempt's token (serve takes it instead only when `installed` was lost and
# this attempt is still the host's latest). The file goes once serve has answered, yes or no;
# when serve cannot be reached, it stays and the next boot tries again.
# NIXOS_PXE_BOOT_REPORT, NIXOS_PXE_CURRENT_SYSTEM and NIXOS_PXE_BOOT_REPORT_PATIENCE (seconds)
# exist for tests (tests/report_module.rs); the unit sets none of them.
state=${NIXOS_PXE_BOOT_REPORT:-/var/lib/nixos-pxe/boot-report.json}
current=${NIXOS_PXE_CURRENT_SYSTEM:-/run/current-system}
patience=${NIXOS_PXE_BOOT_REPORT_PATIENCE:-120}

system=$(readlink -f "$current")
url="$(jq -er .report "$state")/v1/report"
answer=$(mktemp)
trap 'rm -f "$answer"' EXIT
# The token goes on stdin, never on a command line (other users can read those).
status=$(jq -c --arg system "$system" '{ host, generation, attempt, token, boot_token, event: "booted", system: $system }' "$state" |
  curl --silent --show-error --output "$answer" --write-out '%{http_code}' \
    --retry 20 --retry-connrefused --retry-max-time "$patience" --connect-timeout 10 --max-time 30 \
    --header 'Content-Type: application/json' --data-binary @- "$url") || status=000
said=$(head -c 200 "$answer" | tr '\n' ' ')
said=${said%"${said##*[! ]}"} # without the trailing spaces
case $status in
  2??)
    echo "nixos-pxe: report booted: accepted by $url ($system)"
    rm -f "$state"
    ;;
  400 | 403 | 404 | 409)
    echo "nixos-pxe: report booted: refused by $url ($status: $said); not tried again" >&2
    rm -f "$state"
    ;;
  *)
    echo "nixos-pxe: report booted: not delivered to $url (HTTP status $status${said:+: $said}); the next boot tries again" >&2
    exit 1
    ;;
esac
