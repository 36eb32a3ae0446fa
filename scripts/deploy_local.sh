#!/usr/bin/env bash
# Run a fedzo scenario on Flower's deployment engine: a real flower-superlink and N
# flower-supernode processes, then `flwr run` of the fedzo app (scripts/fedzo-app) with
# the scenario path as run config. Waits for the run, checks its final status with
# `flwr ls` (`flwr run --stream` exits 0 even when the ServerApp failed), prints the
# summary, and stops every process it started by its PID (trap on exit).
#
# Usage: scripts/deploy_local.sh SCENARIO [options]
#   --out DIR          run directory (default: runs/<scenario name>-deploy)
#   --nodes N          SuperNodes to start here (default: the scenario's num_clients;
#                      0 with --host LAN_IP to wait for boards on the LAN instead)
#   --host HOST        SuperLink bind address (default 127.0.0.1; for a LAN, the server's
#                      LAN address; 0.0.0.0 listens on every interface)
#   --port PORT        SuperLink port (default: a free port)
#   --timeout SECONDS  give up after this long (default 1800)
#   --logs DIR         keep process logs here (default: a temporary directory, removed
#                      on success and kept, with its path printed, on failure)
#   --resume           continue the run in --out instead of starting it afresh
#   --node-superlink HOST:PORT
#                      the address the SuperNodes started here dial (default: the
#                      SuperLink's own); e.g. a counting proxy (fedzo.bench.wire) that
#                      forwards to --port. Also FEDZO_NODE_SUPERLINK.
#   --secure DIR       TLS and SuperNode authentication instead of --insecure. DIR holds
#                      ca.crt, server.crt (SAN: every address nodes dial; 127.0.0.1 too
#                      with --host 0.0.0.0), server.key, the public key of every
#                      SuperNode allowed to join (*.pub, OpenSSH format, NIST EC curve;
#                      each is registered with `flwr supernode register`) and, for the
#                      N nodes started here, their keys node-<i> and node-<i>.pub.
#                      See docs/deployment.md, "Securing a fleet".
# Environment: FLWR_* and FEDZO_* variables pass through to all processes.
set -euo pipefail

die() { echo "deploy_local: $*" >&2; exit 2; }

SCENARIO="" OUT="" NODES="" HOST="127.0.0.1" PORT="" TIMEOUT=1800 LOGS="" RESUME=false SECURE=""
NODE_SUPERLINK="${FEDZO_NODE_SUPERLINK:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --nodes) NODES="$2"; shift 2 ;;
    --host) HOST="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --logs) LOGS="$2"; shift 2 ;;
    --resume) RESUME=true; shift ;;
    --secure) SECURE="$2"; shift 2 ;;
    --node-superlink) NODE_SUPERLINK="$2"; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$SCENARIO" ] || die "one scenario only (got $SCENARIO and $1)"; SCENARIO="$1"; shift ;;
  esac
done
[ -n "$SCENARIO" ] || die "give a scenario file (see --help)"
[ -f "$SCENARIO" ] || die "$SCENARIO: no such file"
for tool in flower-superlink flower-supernode flwr python; do
  command -v "$tool" >/dev/null || die "$tool not found: activate the environment where fedzo is installed"
done

REPO="$(cd "$(dirname "$0")/.." && pwd)"
APP="$REPO/scripts/fedzo-app"
SCENARIO="$(cd "$(dirname "$SCENARIO")" && pwd)/$(basename "$SCENARIO")"
# name and num_clients from the validated scenario (fails early on a bad file)
read -r NAME NUM_CLIENTS < <(python -c '
import sys
from fedzo.config.scenario import load_scenario
s = load_scenario(sys.argv[1])
print(s.name, s.federation.num_clients)' "$SCENARIO")
NODES="${NODES:-$NUM_CLIENTS}"
OUT="${OUT:-runs/$NAME-deploy}"
mkdir -p "$(dirname "$OUT")"
OUT="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"

if [ -n "$SECURE" ]; then
  [ -d "$SECURE" ] || die "--secure $SECURE: no such directory"
  SECURE="$(cd "$SECURE" && pwd)"
  for f in ca.crt server.crt server.key; do [ -f "$SECURE/$f" ] || die "--secure: $SECURE/$f is missing"; done
  PUBKEYS=("$SECURE"/*.pub)
  [ -f "${PUBKEYS[0]}" ] || die "--secure: no *.pub in $SECURE: no SuperNode could join"
  for i in $(seq 0 $((NODES - 1))); do
    for f in "node-$i" "node-$i.pub"; do
      [ -f "$SECURE/$f" ] || die "--secure: $SECURE/$f (key of local SuperNode $i) is missing"
    done
  done
fi
# The address this machine's processes dial: the bind address, or loopback for 0.0.0.0.
CONNECT="$HOST"; [ "$HOST" = "0.0.0.0" ] && CONNECT=127.0.0.1

free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT="${PORT:-$(free_port)}"
NODE_SUPERLINK="${NODE_SUPERLINK:-$CONNECT:$PORT}"
case "$NODE_SUPERLINK" in *:[0-9]*) ;; *) die "--node-superlink $NODE_SUPERLINK: expected HOST:PORT" ;; esac

KEEP_LOGS=true
if [ -z "$LOGS" ]; then LOGS="$(mktemp -d -t fedzo-deploy.XXXXXX)"; KEEP_LOGS=false; fi
mkdir -p "$LOGS"
export FLWR_HOME="$LOGS/flwr-home"   # a private Flower CLI config: never touches ~/.flwr
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"
export FLWR_DISABLE_UPDATE_CHECK="${FLWR_DISABLE_UPDATE_CHECK:-1}"
mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<EOF
[superlink]
default = "fedzo-deploy"

[superlink.fedzo-deploy]
address = "$CONNECT:$PORT"
$( [ -n "$SECURE" ] && echo "root-certificates = \"$SECURE/ca.crt\"" || echo "insecure = true" )
EOF

PIDS=()
STATUS=1
cleanup() {
  # Stop what this script started, by PID: each process leads its own process group
  # (setsid), so its children (flwr-serverapp, flwr-clientapp) stop with it.
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=false
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=true; done
    $alive || break
    sleep 0.2
  done
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  if [ "$STATUS" -eq 0 ] && ! $KEEP_LOGS; then rm -rf "$LOGS"; else echo "deploy_local: logs in $LOGS" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SETSID=""; command -v setsid >/dev/null && SETSID=setsid   # util-linux; without it, PIDs only
start() {  # start NAME CMD...: in its own process group, logging to $LOGS/NAME.log
  local name="$1"; shift
  $SETSID "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=("$!")
}

if [ -n "$SECURE" ]; then
  LINK_SECURITY=(--ssl-ca-certfile "$SECURE/ca.crt" --ssl-certfile "$SECURE/server.crt"
                 --ssl-keyfile "$SECURE/server.key" --enable-supernode-auth)
else
  LINK_SECURITY=(--insecure)
fi
start superlink flower-superlink "${LINK_SECURITY[@]}" --host "$HOST" --port "$PORT" \
  --disable-runtime-dependency-installation
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/$CONNECT/$PORT") 2>/dev/null && break
  kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$LOGS/superlink.log" >&2; die "the SuperLink exited"; }
  sleep 0.2
done
echo "deploy_local: SuperLink on $HOST:$PORT (pid ${PIDS[0]}); $( [ -n "$SECURE" ] \
  && echo "TLS and SuperNode authentication" || echo "insecure")"
if [ -n "$SECURE" ]; then
  # A fresh SuperLink (in-memory state) knows no SuperNode: register every allowed key.
  for pub in "${PUBKEYS[@]}"; do
    REG="$(flwr supernode register "$pub" fedzo-deploy --format json 2>"$LOGS/register.err")" || {
      cat "$LOGS/register.err" >&2; die "flwr supernode register $pub failed"; }
    NODE_ID="$(python -c 'import json, sys; print(json.loads(sys.argv[1])["node-id"])' "$REG")" \
      || die "flwr supernode register answered: $REG"
    echo "deploy_local: registered $(basename "$pub") as node $NODE_ID"
  done
fi
echo "deploy_local: starting $NODES SuperNode(s)"
[ "$NODE_SUPERLINK" = "$CONNECT:$PORT" ] || echo "deploy_local: SuperNodes dial $NODE_SUPERLINK"
for i in $(seq 0 $((NODES - 1))); do
  if [ -n "$SECURE" ]; then
    NODE_SECURITY=(--root-certificates "$SECURE/ca.crt" --auth-supernode-private-key "$SECURE/node-$i")
  else
    NODE_SECURITY=(--insecure)
  fi
  start "supernode-$i" flower-supernode "${NODE_SECURITY[@]}" --superlink "$NODE_SUPERLINK" --port "$(free_port)" \
    --node-config "partition-id=$i num-partitions=$NUM_CLIENTS cache-dir=\"$LOGS/node-cache\""
done

echo "deploy_local: pids ${PIDS[*]}"

RUN_CONFIG="scenario=\"$SCENARIO\" out=\"$OUT\" force=$( $RESUME && echo false || echo true ) resume=$RESUME"
SUBMIT="$(flwr run "$APP" fedzo-deploy --run-config "$RUN_CONFIG" --format json 2>"$LOGS/flwr-run.err")" || {
  cat "$LOGS/flwr-run.err" >&2; die "flwr run failed"; }
RUN_ID="$(python -c 'import json, sys; print(json.loads(sys.argv[1])["run-id"])' "$SUBMIT")" || die "flwr run answered: $SUBMIT"
echo "deploy_local: run $RUN_ID submitted; writing $OUT"

# Poll the run's status: finished:completed is success; finished:failed/stopped is not.
DEADLINE=$((SECONDS + TIMEOUT))
declare -A GONE=()
while :; do
  LS="$(flwr ls fedzo-deploy --run-id "$RUN_ID" --format json 2>/dev/null || true)"
  STATE="$(python -c '
import json, sys
try:
    runs = json.loads(sys.argv[1]).get("runs", [])
except ValueError:
    runs = []
print(runs[0]["status"] if runs else "unknown")' "$LS")"
  case "$STATE" in
    finished:completed) break ;;
    finished:*) flwr log "$RUN_ID" fedzo-deploy --show >"$LOGS/run.log" 2>&1 || true
                die "run $RUN_ID ended with status $STATE (ServerApp log: $LOGS/run.log)" ;;
  esac
  [ "$SECONDS" -lt "$DEADLINE" ] || die "run $RUN_ID still '$STATE' after ${TIMEOUT} s"
  kill -0 "${PIDS[0]}" 2>/dev/null || die "the SuperLink (pid ${PIDS[0]}) exited (logs in $LOGS); its ServerApp exits too, resume with --resume"
  # A dead SuperNode is a board gone: the round engine records its client as failed and goes on.
  for i in $(seq 1 $((${#PIDS[@]} - 1))); do
    pid="${PIDS[$i]}"
    if ! kill -0 "$pid" 2>/dev/null && [ -z "${GONE[$pid]:-}" ]; then
      GONE[$pid]=1
      echo "deploy_local: SuperNode $((i - 1)) (pid $pid) exited; the run goes on without it (log: $LOGS/supernode-$((i - 1)).log)" >&2
    fi
  done
  sleep 1
done
[ -f "$OUT/summary.json" ] || die "run $RUN_ID completed but $OUT/summary.json is missing"
STATUS=0
echo "deploy_local: run $RUN_ID completed"
python -c 'import json, sys; s = json.load(open(sys.argv[1])); print(json.dumps({k: s.get(k) for k in ("name", "method", "final_accuracy", "bytes_up", "bytes_down", "model_sha256")}))' "$OUT/summary.json"
