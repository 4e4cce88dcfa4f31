#!/usr/bin/env bash
# HTTP benchmarks of the gpumod daemon. Builds what it needs (Release),
# writes a simulated-GPU config into a temp dir, runs `gpumod serve` on free loopback ports with
# gpumod-test-engine services, measures, prints a table, and stops every process it started,
# even on failure or Ctrl-C.
#
#   1. Fast path: POST /request for a model that is already ready, under wrk (req/s, p50, p99),
#      with 1 and 2 wrk threads at several connection counts.
#   2. Proxy overhead: POST /v1/chat/completions through gpumod vs. the same call straight to the
#      engine, interleaved pair by pair in one run (median and p99 of the added latency), and the
#      streaming throughput ratio (SSE events/s and bytes/s, proxy / direct) on zero-gap streams
#      of STREAM_TOKENS chunks each (engine --stream-gap-ms 0, request max_tokens).
#   3. Scheduler overhead: time from POST /request to 200 minus the engine's --load-ms, for a cold
#      load onto an empty GPU and for a swap (the other model must be stopped first; sim release
#      lag 0).
#
# Variants (one daemon each, run one after the other):
#   default   the daemon's default polling (health 5 ms, VRAM 5 ms), log level info (a line per
#             request)
#   fast      the same polling set explicitly (5 ms), --log-level warn
#
# Usage: bench/http/run.sh            (from anywhere; the repo is found from this file)
# Environment (all optional):
#   BUILD_DIR     Release build directory (default <repo>/build-bench)
#   NO_BUILD=1    use the binaries already in BUILD_DIR
#   WRK_CONNS     connection counts for the fast path (default "1 16 64")
#   WRK_THREADS   wrk thread counts (default "1 2")
#   WRK_DURATION  per wrk run (default 5s);  WRK_REPEAT  runs per count (default 3)
#   LAT_N         request pairs for the proxy latency (default 2000)
#   STREAM_CLIENTS, STREAM_PER, STREAM_ROUNDS, STREAM_TOKENS   streaming (default 8, 10, 4, 500)
#   VARIANTS      which variants to run (default "default fast")
#   PHASES        which measurements to run (default "sched fast proxy"; proxy runs in the default
#                 variant only)
#   LOAD_MS       the engine's load time (default 200);  LOAD_RUNS  cold loads and swaps each (default 20)
#   RESULTS_OUT   also copy the raw RESULT lines to this file
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
WRK_CONNS=${WRK_CONNS:-"1 16 64"}
WRK_THREADS=${WRK_THREADS:-"1 2"}
WRK_DURATION=${WRK_DURATION:-5s}
WRK_REPEAT=${WRK_REPEAT:-3}
LAT_N=${LAT_N:-2000}
STREAM_CLIENTS=${STREAM_CLIENTS:-8}
STREAM_PER=${STREAM_PER:-10}
STREAM_ROUNDS=${STREAM_ROUNDS:-4}
STREAM_TOKENS=${STREAM_TOKENS:-500}
VARIANTS=${VARIANTS:-"default fast"}
LOAD_MS=${LOAD_MS:-200}
LOAD_RUNS=${LOAD_RUNS:-20}
PHASES=${PHASES:-"sched fast proxy"}

GPUMOD=$BUILD_DIR/app/gpumod
ENGINE=$BUILD_DIR/tools/test-engine/gpumod-test-engine
PROBE=$BUILD_DIR/http/http_probe

log() { echo "[httpbench] $*" >&2; }

# ---------- build ----------
if [[ -z ${NO_BUILD:-} ]]; then
  if [[ ! -f $BUILD_DIR/build.ninja ]]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGPUMOD_BUILD_TESTS=OFF \
      -DGPUMOD_BUILD_BENCH=OFF -DGPUMOD_ENGINE_CUDA=OFF >&2
  fi
  ninja -C "$BUILD_DIR" -j2 gpumod gpumod-test-engine >&2
  if [[ ! -x $PROBE || $ROOT/bench/http/http_probe.cpp -nt $PROBE ]]; then
    mkdir -p "$(dirname "$PROBE")"
    # shellcheck disable=SC2046  # pkg-config output is a list of flags
    g++ -std=c++20 -O2 -Wall -Wextra -Werror "$ROOT/bench/http/http_probe.cpp" \
      $(pkg-config --cflags --libs cpp-httplib) -pthread -o "$PROBE"
  fi
fi
for bin in "$GPUMOD" "$ENGINE" "$PROBE"; do
  [[ -x $bin ]] || { log "missing $bin (build it, or unset NO_BUILD)"; exit 1; }
done
command -v wrk >/dev/null || { log "wrk not found (Debian package wrk)"; exit 1; }

# ---------- processes and cleanup ----------
TMP=$(mktemp -d /tmp/gpumod-httpbench.XXXXXX)
RESULTS=$TMP/results.txt
: >"$RESULTS"
DAEMON_PID=""
DAEMON_PORT=""

stop_daemon() {
  [[ -n $DAEMON_PID ]] || return 0
  # --stop-services-on-exit: SIGTERM stops the engines it started before the daemon exits.
  kill -TERM "$DAEMON_PID" 2>/dev/null || true
  for _ in $(seq 200); do
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$DAEMON_PID" 2>/dev/null || true
  wait "$DAEMON_PID" 2>/dev/null || true
  DAEMON_PID=""
}

# Safety net: any process still carrying one of our simulated-GPU directories in its environment
# was started (through the daemon) by this script.
kill_leftover_engines() {
  local env pid
  for env in /proc/[0-9]*/environ; do
    if { tr '\0' '\n' <"$env"; } 2>/dev/null | grep -qF "GPUMOD_SIM_DIR=$TMP/"; then
      pid=${env#/proc/}
      pid=${pid%/environ}
      log "killing leftover engine $pid"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

cleanup() {
  local rc=$?
  set +e
  stop_daemon
  kill_leftover_engines
  if [[ $rc -ne 0 ]]; then
    log "failed (exit $rc); daemon logs:"
    tail -n 30 "$TMP"/*/state/daemon.log >&2 2>/dev/null
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- config ----------
mapfile -t PORTS < <("$PROBE" ports --n 5)
PORT_FAST=${PORTS[0]} PORT_COLD=${PORTS[1]} PORT_A=${PORTS[2]} PORT_B=${PORTS[3]}

preset() {  # dir id port vram_mb load_ms [extra engine flags, as ", \"--flag\", \"v\""]
  cat >"$1/presets/$2.yaml" <<EOF
id: $2
name: $2
driver: llamacpp
port: $3
vram_mb: $4
model_id: $2
startup_timeout: 30
cmd: ["$ENGINE", "--port", "$3", "--protocol", "llamacpp", "--model", "$2", "--vram-mb", "$4", "--load-ms", "$5"${6:-}]
EOF
}

# One 24000 MB simulated GPU, no headroom, no release lag. bench-fast and bench-cold fit
# together; bench-swap-a and bench-swap-b (15000 MB each) never fit together, so a request for
# one must stop the other (the cold phase runs first, alone, and is stopped before the swaps).
write_config() {  # dir health_poll vram_poll
  mkdir -p "$1/presets" "$1/modes"
  cat >"$1/gpumod.yaml" <<EOF
gpus:
  probe: sim
  sim:
    - name: bench-gpu
      memory_mb: 24000
  sim_release_lag: 0ms
policy:
  headroom_mb: 0
  stop_grace: 3s
EOF
  # Empty: the daemon's own defaults (docs/config.md).
  if [[ -n $2 ]]; then echo "  health_poll_interval: $2" >>"$1/gpumod.yaml"; fi
  if [[ -n $3 ]]; then echo "  vram_poll_interval: $3" >>"$1/gpumod.yaml"; fi
  preset "$1" bench-fast "$PORT_FAST" 1000 0 ', "--stream-gap-ms", "0"'
  preset "$1" bench-cold "$PORT_COLD" 2000 "$LOAD_MS"
  preset "$1" bench-swap-a "$PORT_A" 15000 "$LOAD_MS"
  preset "$1" bench-swap-b "$PORT_B" 15000 "$LOAD_MS"
  printf 'id: blank\nname: blank\nservices: []\n' >"$1/modes/blank.yaml"
}

start_daemon() {  # name health_poll vram_poll log_level
  local dir=$TMP/$1
  write_config "$dir/config" "$2" "$3"
  mkdir -p "$dir/state"
  DAEMON_PORT=${PORTS[4]}
  "$GPUMOD" serve --config "$dir/config" --listen "127.0.0.1:$DAEMON_PORT" --state-dir "$dir/state" \
    --log-level "$4" --stop-services-on-exit >"$dir/state/daemon.log" 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$DAEMON_PORT/healthz" >/dev/null && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "gpumod serve did not come up; its log:"
  cat "$dir/state/daemon.log" >&2
  return 1
}

api() {  # method path -> body on stdout; fails unless 2xx
  curl -sf -X "$1" -H 'Content-Type: application/json' -d '{}' "http://127.0.0.1:$DAEMON_PORT$2"
}

stop_service() {
  api POST "/services/$1/stop" >/dev/null
  for _ in $(seq 300); do
    [[ $(api GET "/services/$1" | jq -r .state) == stopped ]] && return 0
    sleep 0.05
  done
  log "$1 did not stop"
  return 1
}

request_ready() {
  local out
  out=$(curl -sf -H 'Content-Type: application/json' -d "{\"model\":\"$1\"}" "http://127.0.0.1:$DAEMON_PORT/request")
  [[ $(jq -r .status <<<"$out") == ready ]] || { log "request for $1 did not get ready: $out"; return 1; }
}

# ---------- 3. scheduler overhead ----------
tag() { sed "s/^RESULT /RESULT variant=$VARIANT /" >>"$RESULTS"; }

sched_phase() {
  log "$VARIANT: scheduler overhead, $LOAD_RUNS cold loads, $LOAD_RUNS swaps, engine load ${LOAD_MS} ms"
  "$PROBE" load --daemon "127.0.0.1:$DAEMON_PORT" --models bench-cold --load-ms "$LOAD_MS" --runs "$LOAD_RUNS" | tag
  stop_service bench-cold
  "$PROBE" load --daemon "127.0.0.1:$DAEMON_PORT" --models bench-swap-a,bench-swap-b --load-ms "$LOAD_MS" \
    --runs "$LOAD_RUNS" | tag
  stop_service bench-swap-a
  stop_service bench-swap-b
}

# ---------- 1. fast path ----------
LUA=$TMP/post_request.lua
sed "s/MODEL/bench-fast/" "$ROOT/bench/http/post_request.lua" >"$LUA"
fast_path() {
  local t c r out rps p50 p99 non2xx errors
  request_ready bench-fast
  for t in $WRK_THREADS; do
  for c in $WRK_CONNS; do
    ((c >= t)) || continue
    for r in $(seq "$WRK_REPEAT"); do
      out=$(wrk -t"$t" -c"$c" -d"$WRK_DURATION" --timeout 10s --latency -s "$LUA" "http://127.0.0.1:$DAEMON_PORT/request")
      rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
      p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
      p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
      non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
      errors=$(awk -F'Socket errors: ' '/Socket errors/ {print $2}' <<<"$out" | tr -d ' ,')
      echo "RESULT kind=fastpath threads=$t conns=$c run=$r rps=$rps p50=$p50 p99=$p99 non2xx=${non2xx:-0} errors=${errors:-none}" | tag
      log "$VARIANT: fast path t=$t c=$c run $r: $rps req/s, p50 $p50, p99 $p99, non-2xx ${non2xx:-0}, socket errors ${errors:-none}"
    done
  done
  done
}

# ---------- 2. proxy overhead ----------
CHAT='{"model":"bench-fast","messages":[{"role":"user","content":"one two three four five six seven eight"}]}'
STREAM_CHAT='{"model":"bench-fast","stream":true,"max_tokens":'"$STREAM_TOKENS"',"messages":[{"role":"user","content":"one two three four five six seven eight"}]}'
proxy_phase() {  # pairs
  request_ready bench-fast
  log "$VARIANT: proxy latency, $1 interleaved pairs"
  "$PROBE" latency --direct "127.0.0.1:$PORT_FAST" --proxy "127.0.0.1:$DAEMON_PORT" \
    --path /v1/chat/completions --body "$CHAT" --n "$1" | tag
  log "$VARIANT: streaming, $STREAM_ROUNDS rounds x $STREAM_CLIENTS clients x $STREAM_PER streams per side"
  "$PROBE" stream --direct "127.0.0.1:$PORT_FAST" --proxy "127.0.0.1:$DAEMON_PORT" \
    --path /v1/chat/completions --body "$STREAM_CHAT" --rounds "$STREAM_ROUNDS" --clients "$STREAM_CLIENTS" \
    --per "$STREAM_PER" | tag
}

# ---------- run ----------
for VARIANT in $VARIANTS; do
  # (one command per line: `set -e` does not apply inside a function called from an && list)
  case $VARIANT in
    default) start_daemon "$VARIANT" "" "" info ;;
    fast) start_daemon "$VARIANT" 5ms 5ms warn ;;
    *)
      log "unknown variant $VARIANT"
      exit 2
      ;;
  esac
  [[ " $PHASES " != *" sched "* ]] || sched_phase
  [[ " $PHASES " != *" fast "* ]] || fast_path
  [[ $VARIANT != default || " $PHASES " != *" proxy "* ]] || proxy_phase "$LAT_N"
  stop_daemon
done

# ---------- table ----------
[[ -z ${RESULTS_OUT:-} ]] || cp "$RESULTS" "$RESULTS_OUT"
kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
echo
echo "gpumod HTTP benchmarks  $(date -u +%Y-%m-%dT%H:%MZ)  nproc=$(nproc)  $(lscpu | sed -n 's/^Model name: *//p')  load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "variants: default (the daemon's default polling: health 5 ms, VRAM 5 ms; log info); fast (5 ms polling set explicitly, log warn)"
echo
echo "1. Fast path: POST /request, model ready (wrk, $WRK_DURATION per run; median and best of $WRK_REPEAT runs; target >= 30000 req/s)"
printf '| variant | wrk threads | conns | req/s median | req/s best | p50 (median run) | p99 (median run) | non-2xx | socket errors |\n|---|---|---|---|---|---|---|---|---|\n'
for v in $VARIANTS; do
  for t in $WRK_THREADS; do
  for c in $WRK_CONNS; do
    ((c >= t)) || continue
    { grep "variant=$v kind=fastpath threads=$t conns=$c " "$RESULTS" || true; } |
      awk -v variant="$v" -v thr="$t" -v c="$c" '
        { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[NR, kv[1]] = kv[2] } n = NR; r[NR] = v[NR, "rps"] + 0 }
        END {
          if (n == 0) exit
          for (i = 1; i <= n; i++) idx[i] = i
          for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[idx[j]] < r[idx[i]]) { t = idx[i]; idx[i] = idx[j]; idx[j] = t }
          m = idx[int((n + 1) / 2)]; b = idx[n]; non = 0; err = ""
          for (i = 1; i <= n; i++) { non += v[i, "non2xx"]; if (v[i, "errors"] != "none") err = err v[i, "errors"] " " }
          printf "| %s | %s | %s | %.0f | %.0f | %s | %s | %d | %s |\n", variant, thr, c, r[m], r[b], v[m, "p50"], v[m, "p99"], non, (err == "" ? "none" : err)
        }'
  done
  done
done
echo
echo "2. Proxy overhead: POST /v1/chat/completions through gpumod vs. straight to the engine, interleaved pairs (target: added median <= 0.1 ms)"
echo "(direct: keep-alive connection; direct, new conn: a new connection per call, for reference)"
echo "| variant | pairs | direct p50 | via gpumod p50 | added p50 | direct p99 | via gpumod p99 | added p99 | per-pair diff p50 / p99 | direct, new conn p50 |"
echo "|---|---|---|---|---|---|---|---|---|---|"
{ grep 'kind=latency' "$RESULTS" || true; } | while read -r L; do
  printf '| %s | %s | %s ms | %s ms | **%s ms** | %s ms | %s ms | %s ms | %s / %s ms | %s ms |\n' "$(kv variant <<<"$L")" "$(kv n <<<"$L")" \
    "$(kv direct_p50_ms <<<"$L")" "$(kv proxy_p50_ms <<<"$L")" "$(kv added_p50_ms <<<"$L")" "$(kv direct_p99_ms <<<"$L")" \
    "$(kv proxy_p99_ms <<<"$L")" "$(kv added_p99_ms <<<"$L")" "$(kv pairdiff_p50_ms <<<"$L")" "$(kv pairdiff_p99_ms <<<"$L")" \
    "$(kv direct_newconn_p50_ms <<<"$L")"
done
echo
echo "   Streaming: $STREAM_CLIENTS concurrent clients, $STREAM_TOKENS-chunk SSE streams with no gap between chunks (engine --stream-gap-ms 0)"
echo "| variant | streams per side | events per stream | direct events/s | via gpumod events/s | ratio (rounds min..max) | direct bytes/s | via gpumod bytes/s | ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
{ grep 'kind=stream' "$RESULTS" || true; } | while read -r S; do
  printf '| %s | %s | %s | %s | %s | **%s** (%s..%s) | %s | %s | %s |\n' "$(kv variant <<<"$S")" "$(kv streams_per_side <<<"$S")" \
    "$(kv events_per_stream <<<"$S")" "$(kv direct_events_s <<<"$S")" "$(kv proxy_events_s <<<"$S")" "$(kv ratio_events <<<"$S")" \
    "$(kv ratio_min_round <<<"$S")" "$(kv ratio_max_round <<<"$S")" "$(kv direct_bytes_s <<<"$S")" "$(kv proxy_bytes_s <<<"$S")" \
    "$(kv ratio_bytes <<<"$S")"
done
echo
echo "3. Scheduler overhead: POST /request to 200 minus the engine's --load-ms ($LOAD_MS ms), $LOAD_RUNS runs each (target: median <= 20 ms)"
echo "| variant | case | median | min | p90 | max | median time to 200 |"
echo "|---|---|---|---|---|---|---|"
{ grep -E 'kind=(cold|swap)' "$RESULTS" || true; } | while read -r line; do
  printf '| %s | %s | **%s ms** | %s ms | %s ms | %s ms | %s ms |\n' "$(kv variant <<<"$line")" "$(kv kind <<<"$line")" \
    "$(kv overhead_p50_ms <<<"$line")" "$(kv overhead_min_ms <<<"$line")" "$(kv overhead_p90_ms <<<"$line")" \
    "$(kv overhead_max_ms <<<"$line")" "$(kv total_p50_ms <<<"$line")"
done
