#!/usr/bin/env bash
# Start Alertmanager with Observer's config, the webhook URL filled in from the environment (never committed).
#   OBSERVER_ALERT_WEBHOOK=https://...  monitoring/alertmanager/run.sh
#   OBSERVER_ALERT_WEBHOOK_FILE=/run/secrets/observer_webhook  monitoring/alertmanager/run.sh
# The rendered config goes to $OBSERVER_ALERTMANAGER_DIR (default /var/lib/observer-alertmanager), mode 0600, written
# to a temp file and renamed; it is checked with amtool before Alertmanager starts. Extra arguments go to alertmanager.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${OBSERVER_ALERTMANAGER_DIR:-/var/lib/observer-alertmanager}"
url="${OBSERVER_ALERT_WEBHOOK:-}"
if [ -z "$url" ] && [ -n "${OBSERVER_ALERT_WEBHOOK_FILE:-}" ]; then
  url="$(tr -d '\r\n' < "$OBSERVER_ALERT_WEBHOOK_FILE")"
fi
if [ -z "$url" ]; then
  echo "run.sh: set OBSERVER_ALERT_WEBHOOK or OBSERVER_ALERT_WEBHOOK_FILE (the webhook URL alerts are posted to)" >&2
  exit 2
fi
case "$url" in
  http://*|https://*) ;;
  *) echo "run.sh: the webhook URL must start with http:// or https://" >&2; exit 2 ;;
esac
umask 077
mkdir -p "$dir/data"
tmp="$(mktemp "$dir/.alertmanager.yml.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
# the URL is passed through the environment, never on a command line (visible in ps)
OBSERVER_WEBHOOK_URL="$url" python3 - "$here/alertmanager.yml" "$tmp" <<'PY'
import json, os, sys
src, dst = sys.argv[1], sys.argv[2]
placeholder = '"https://observer-alert-webhook.invalid/set-OBSERVER_ALERT_WEBHOOK"'
text = open(src, encoding="utf-8").read()
if text.count(placeholder) != 1:
    sys.exit("run.sh: the placeholder URL is missing from alertmanager.yml")
with open(dst, "w", encoding="utf-8") as f:
    f.write(text.replace(placeholder, json.dumps(os.environ["OBSERVER_WEBHOOK_URL"])))
PY
amtool check-config "$tmp" >/dev/null
mv -f "$tmp" "$dir/alertmanager.yml"
trap - EXIT
# Debian names the binary prometheus-alertmanager; upstream releases name it alertmanager
bin="$(command -v alertmanager || command -v prometheus-alertmanager || true)"
[ -n "$bin" ] || { echo "run.sh: alertmanager not installed (apt-get install prometheus-alertmanager)" >&2; exit 2; }
exec "$bin" --config.file="$dir/alertmanager.yml" --storage.path="$dir/data" \
  --web.listen-address="${OBSERVER_ALERTMANAGER_LISTEN:-127.0.0.1:9093}" --cluster.listen-address= "$@"
