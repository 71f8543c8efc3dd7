#!/usr/bin/env bash
# Starts the worker inside the image: model files, then ComfyUI on loopback, then the front door.
#
# The worker we replace started ComfyUI on all interfaces, never noticed when it died at start
# and downloaded models during the first job. Here every stage either succeeds or stops the
# container with a sentence and ComfyUI's last log lines, so RunPod replaces the worker instead
# of feeding it jobs it can only fail.
#
# Stages:
#   1. provision   python -m infinitetalk_worker.provision (downloads missing model files when
#                  PROVISION_MODELS is on, always checks them and points ComfyUI at them)
#   2. ComfyUI     in the background, log lines prefixed with [comfyui], until it answers or
#                  COMFY_READY_TIMEOUT_S passes; exiting during start fails the container at once
#   3. validate    every workflow checked against the live ComfyUI (node types, inputs, model files)
#   4. front door  WORKER_MODE: serverless (RunPod handler), api (RunPod's local test API on
#                  port 8000) or lightx2v (the LightX2V-compatible task service)
# Then both processes are watched: either one ending stops the other, and SIGTERM reaches both.
#
# The commands of each stage can be replaced (PROVISION_CMD, COMFY_CMD, VALIDATE_CMD,
# WORKER_CMD) so the tests can play every stage with stand-ins; an empty VALIDATE_CMD or
# PROVISION_CMD skips that stage.
set -euo pipefail

log() { printf '[entrypoint] %s\n' "$*"; }
fail() { printf '[entrypoint] ERROR: %s\n' "$*" >&2; }

is_true() {
    case "${1,,}" in
        1 | true | yes | on) return 0 ;;
        *) return 1 ;;
    esac
}

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORKER_PYTHON="${WORKER_PYTHON:-python3}"
COMFY_PYTHON="${COMFY_PYTHON:-/opt/comfy-venv/bin/python}"
COMFY_DIR="${COMFY_DIR:-/comfyui}"
COMFY_URL="${COMFY_URL:-http://127.0.0.1:8188}"
COMFY_READY_URL="${COMFY_READY_URL:-${COMFY_URL%/}/system_stats}"
COMFY_READY_TIMEOUT_S="${COMFY_READY_TIMEOUT_S:-600}"
COMFY_EXTRA_ARGS="${COMFY_EXTRA_ARGS:-}"
WORKER_MODE="${WORKER_MODE:-serverless}"
STOP_GRACE_S="${STOP_GRACE_S:-20}"
LOG_TAIL_LINES="${LOG_TAIL_LINES:-40}"
export PYTHONUNBUFFERED=1

# ComfyUI listens where COMFY_URL points, and only on loopback: the worker is its only client.
comfy_port="${COMFY_URL##*:}"
comfy_port="${comfy_port%%/*}"
if ! [[ "$comfy_port" =~ ^[0-9]+$ ]]; then
    fail "COMFY_URL must name a port, like http://127.0.0.1:8188 (got '$COMFY_URL')"
    exit 2
fi

# Faster attention only when asked for and importable; otherwise every GPU runs sdpa.
if [[ "${ATTENTION_MODE:-sdpa}" == sageattn* ]]; then
    if ! "$COMFY_PYTHON" -c 'import sageattention' >/dev/null 2>&1; then
        log "ATTENTION_MODE=$ATTENTION_MODE asked for SageAttention, which is not installed in this image; using sdpa"
        export ATTENTION_MODE=sdpa
    fi
fi

default_comfy_cmd="$(printf '%q ' "$COMFY_PYTHON") main.py --listen 127.0.0.1 --port $comfy_port"
default_comfy_cmd+=" --disable-auto-launch --disable-metadata --disable-api-nodes --preview-method none"
COMFY_CMD="${COMFY_CMD:-$default_comfy_cmd} $COMFY_EXTRA_ARGS"
PROVISION_CMD="${PROVISION_CMD-$(printf '%q' "$WORKER_PYTHON") -m infinitetalk_worker.provision}"
VALIDATE_CMD="${VALIDATE_CMD-$(printf '%q' "$WORKER_PYTHON") -m infinitetalk_worker.validate --live}"

case "$WORKER_MODE" in
    serverless) default_worker_cmd="$(printf '%q' "$WORKER_PYTHON") -u handler.py" ;;
    api) default_worker_cmd="$(printf '%q' "$WORKER_PYTHON") -u handler.py --rp_serve_api --rp_api_host 0.0.0.0" ;;
    lightx2v) default_worker_cmd="$(printf '%q' "$WORKER_PYTHON") -u -m infinitetalk_worker.lightx2v" ;;
    *)
        fail "WORKER_MODE must be serverless, api or lightx2v (got '$WORKER_MODE')"
        exit 2
        ;;
esac
WORKER_CMD="${WORKER_CMD:-$default_worker_cmd}"

comfy_log="$(mktemp -t comfyui-log.XXXXXX)"
comfy_pid=""
worker_pid=""
stage_pid=""
stopping=0

stop_pids() {
    local pid pids=()
    for pid in "$@"; do
        [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && pids+=("$pid")
    done
    ((${#pids[@]})) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local waited=0
    while ((waited < STOP_GRACE_S * 10)); do
        local alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        ((alive)) || break
        sleep 0.1
        waited=$((waited + 1))
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "process $pid ignored SIGTERM for ${STOP_GRACE_S}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}

on_signal() {
    stopping=1
    log "stop requested; stopping ComfyUI and the worker"
    # Forward at once; the main flow waits for both and exits.
    local pid
    for pid in "$stage_pid" "$worker_pid" "$comfy_pid"; do
        if [[ -n "$pid" ]]; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
}
trap on_signal TERM INT

cleanup() {
    rm -f "$comfy_log"
}
trap cleanup EXIT

comfy_last_lines() {
    printf '[entrypoint] last %s lines of the ComfyUI log:\n' "$LOG_TAIL_LINES" >&2
    tail -n "$LOG_TAIL_LINES" "$comfy_log" | sed 's/^/    /' >&2
}

# Runs one stage in the background and waits for it, so a SIGTERM is handled (and forwarded)
# at once rather than after a long download.
run_stage() {
    local name="$1" cmd="$2"
    [[ -n "$cmd" ]] || return 0
    log "$name: $cmd"
    (cd "$APP_DIR" && exec bash -c "exec $cmd") &
    stage_pid=$!
    local rc=0
    wait "$stage_pid" || rc=$?
    # A signal interrupts wait before the stage ends: wait again for its real exit.
    while kill -0 "$stage_pid" 2>/dev/null; do
        wait "$stage_pid" || rc=$?
    done
    stage_pid=""
    if ((stopping)); then
        stop_pids "$comfy_pid"
        exit 143
    fi
    if ((rc != 0)); then
        fail "$name failed (exit code $rc); the worker cannot serve jobs"
        stop_pids "$comfy_pid"
        exit 1
    fi
}

# --- 1. model files -------------------------------------------------------------------------
run_stage "provision" "$PROVISION_CMD"

# --- 2. ComfyUI -----------------------------------------------------------------------------
log "starting ComfyUI: $COMFY_CMD"
(cd "$COMFY_DIR" && exec bash -c "exec $COMFY_CMD") >"$comfy_log" 2>&1 &
comfy_pid=$!
# Stream the log with a prefix; tail ends by itself once ComfyUI is gone.
tail --pid="$comfy_pid" -n +1 -F "$comfy_log" 2>/dev/null | sed -u 's/^/[comfyui] /' &

start_s=$SECONDS
until curl -fsS -o /dev/null --max-time 2 "$COMFY_READY_URL" 2>/dev/null; do
    if ((stopping)); then
        stop_pids "$comfy_pid"
        exit 143
    fi
    if ! kill -0 "$comfy_pid" 2>/dev/null; then
        rc=0
        wait "$comfy_pid" || rc=$?
        fail "ComfyUI exited with code $rc while starting, before it answered $COMFY_READY_URL"
        comfy_last_lines
        exit 1
    fi
    if ((SECONDS - start_s >= ${COMFY_READY_TIMEOUT_S%.*})); then
        fail "ComfyUI did not answer $COMFY_READY_URL within ${COMFY_READY_TIMEOUT_S}s (COMFY_READY_TIMEOUT_S); stopping it"
        comfy_last_lines
        stop_pids "$comfy_pid"
        exit 1
    fi
    sleep 0.5
done
log "ComfyUI is ready after $((SECONDS - start_s))s"

# --- 3. workflows against the live ComfyUI -----------------------------------------------------
run_stage "validate" "$VALIDATE_CMD"

# --- 4. the front door ----------------------------------------------------------------------
log "starting the worker ($WORKER_MODE): $WORKER_CMD"
(cd "$APP_DIR" && exec bash -c "exec $WORKER_CMD") &
worker_pid=$!

# Whichever ends first decides; a signal interrupts wait -n and is handled by on_signal.
while true; do
    if ((stopping)); then
        stop_pids "$worker_pid" "$comfy_pid"
        log "stopped"
        exit 143
    fi
    if ! kill -0 "$comfy_pid" 2>/dev/null; then
        rc=0
        wait "$comfy_pid" || rc=$?
        fail "ComfyUI exited with code $rc while the worker was running; stopping the worker"
        comfy_last_lines
        stop_pids "$worker_pid"
        exit 1
    fi
    if ! kill -0 "$worker_pid" 2>/dev/null; then
        rc=0
        wait "$worker_pid" || rc=$?
        log "the worker exited with code $rc; stopping ComfyUI"
        stop_pids "$comfy_pid"
        exit "$rc"
    fi
    wait -n "$comfy_pid" "$worker_pid" 2>/dev/null || true
done
