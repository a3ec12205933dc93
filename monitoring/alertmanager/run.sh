#!/usr/bin/env bash
# Start Alertmanager with Observer's config, its receiver's integrations filled in from the environment (never
# committed). Any of, each value directly or from a file (..._FILE, e.g. a mounted secret):
#   OBSERVER_ALERT_SLACK_URL=https://hooks.slack.com/services/...                      Slack (incoming webhook)
#   OBSERVER_ALERT_TELEGRAM_BOT_TOKEN=123456:ABC... OBSERVER_ALERT_TELEGRAM_CHAT_ID=-100...  Telegram (sendMessage)
#   OBSERVER_ALERTMANAGER_WEBHOOK=https://...          a receiver of Alertmanager's own webhook JSON
# e.g. OBSERVER_ALERT_SLACK_URL_FILE=/run/secrets/slack_url monitoring/alertmanager/run.sh
# The rendered config goes to $OBSERVER_ALERTMANAGER_DIR (default /var/lib/observer-alertmanager), mode 0600,
# written to a temp file, checked with amtool and renamed; the Slack URL goes beside it (slack_api_url, 0600) and is
# read by Alertmanager through api_url_file. No secret is printed: a failed check shows amtool's output with every
# secret masked. Extra arguments go to alertmanager.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${OBSERVER_ALERTMANAGER_DIR:-/var/lib/observer-alertmanager}"
umask 077
mkdir -p "$dir/data"
# secrets travel in the environment only, never on a command line (visible in ps)
python3 - "$here/alertmanager.yml" "$dir" <<'PY'
import json, os, shutil, subprocess, sys, tempfile

src, out_dir = sys.argv[1], sys.argv[2]
PLACEHOLDER = "  - name: observer\n"
secrets = []


def fail(msg):
    print(f"run.sh: {msg}", file=sys.stderr)
    sys.exit(2)


def setting(name):
    """$NAME, or the content of the file named by $NAME_FILE; stripped; '' when neither is set."""
    value = os.environ.get(name, "").strip()
    path = os.environ.get(name + "_FILE", "").strip()
    if not value and path:
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read().strip()
        except OSError as e:
            fail(f"{name}_FILE: cannot read {path}: {e.strerror}")
    if value:
        secrets.append(value)
    return value


def url(name):
    value = setting(name)
    if value and not value.startswith(("http://", "https://")):
        fail(f"{name} must start with http:// or https://")
    return value


def write_private(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        return tmp
    except BaseException:
        os.unlink(tmp)
        raise


# plain text: Telegram's HTML parse mode would reject a summary holding "<"
TEXT = ('{{ range .Alerts }}[{{ .Status | toUpper }}] {{ .Labels.alertname }}: {{ .Annotations.summary }}'
        '{{ if .Annotations.runbook }} (runbook: {{ .Annotations.runbook }}){{ end }}\n{{ end }}')
receiver = {"name": "observer"}
slack = url("OBSERVER_ALERT_SLACK_URL")
token = setting("OBSERVER_ALERT_TELEGRAM_BOT_TOKEN")
chat = os.environ.get("OBSERVER_ALERT_TELEGRAM_CHAT_ID", "").strip()
generic = url("OBSERVER_ALERTMANAGER_WEBHOOK")
if slack:
    receiver["slack_configs"] = [{"api_url_file": os.path.join(out_dir, "slack_api_url"), "send_resolved": True,
                                  "text": TEXT}]
if token or chat:
    if not (token and chat):
        fail("Telegram needs both OBSERVER_ALERT_TELEGRAM_BOT_TOKEN (or ..._FILE) and OBSERVER_ALERT_TELEGRAM_CHAT_ID")
    if not chat.lstrip("-").isdigit():
        fail("OBSERVER_ALERT_TELEGRAM_CHAT_ID must be the numeric chat id (e.g. -1001234567890)")
    receiver["telegram_configs"] = [{"bot_token": token, "chat_id": int(chat), "parse_mode": "", "message": TEXT,
                                     "send_resolved": True}]
if generic:
    receiver["webhook_configs"] = [{"url": generic, "send_resolved": True, "max_alerts": 20}]
if len(receiver) == 1:
    fail("no receiver configured: set OBSERVER_ALERT_SLACK_URL (Slack), OBSERVER_ALERT_TELEGRAM_BOT_TOKEN and "
         "OBSERVER_ALERT_TELEGRAM_CHAT_ID (Telegram) and/or OBSERVER_ALERTMANAGER_WEBHOOK (Alertmanager's JSON), "
         "each also as ..._FILE. (OBSERVER_ALERT_WEBHOOK is the Dagster sensors' webhook; it is not read here.)")

text = open(src, encoding="utf-8").read()
if text.count(PLACEHOLDER) != 1:
    fail("the receiver line '  - name: observer' is missing from alertmanager.yml")
# a JSON object is a YAML flow mapping: every value quoted and escaped, whatever it holds
rendered = text.replace(PLACEHOLDER, "  - " + json.dumps(receiver) + "\n")
final = os.path.join(out_dir, "alertmanager.yml")
pending = []
try:
    if slack:
        pending.append((write_private(os.path.join(out_dir, "slack_api_url"), slack),
                        os.path.join(out_dir, "slack_api_url")))
    tmp = write_private(final, rendered)
    pending.append((tmp, final))
    amtool = shutil.which("amtool")
    if amtool is None:
        fail("amtool not installed (apt-get install prometheus-alertmanager)")
    r = subprocess.run([amtool, "check-config", tmp], capture_output=True, text=True)
    if r.returncode:
        shown = r.stdout + r.stderr
        for s in sorted(set(secrets), key=len, reverse=True):
            shown = shown.replace(s, "***")
        fail("the rendered config failed amtool check-config:\n" + shown.replace(tmp, "alertmanager.yml"))
    for t, dst in pending:
        os.replace(t, dst)
    pending = []
finally:
    for t, _ in pending:
        if os.path.exists(t):
            os.unlink(t)
kinds = [k.split("_")[0] for k in receiver if k != "name"]
print(f"run.sh: receiver observer: {', '.join(kinds)}", file=sys.stderr)
PY
# Debian names the binary prometheus-alertmanager; upstream releases name it alertmanager
bin="$(command -v alertmanager || command -v prometheus-alertmanager || true)"
[ -n "$bin" ] || { echo "run.sh: alertmanager not installed (apt-get install prometheus-alertmanager)" >&2; exit 2; }
exec "$bin" --config.file="$dir/alertmanager.yml" --storage.path="$dir/data" \
  --web.listen-address="${OBSERVER_ALERTMANAGER_LISTEN:-127.0.0.1:9093}" --cluster.listen-address= "$@"
