#!/usr/bin/env bash
# Build the facetalk image without Docker or Docker Hub, then prove it by running its
# commands inside the mounted image (`make image-check`; root on a Debian bookworm host).
#
#   1. a Python base made by debootstrap (bookworm: python3.11, python3-venv) and
#      `podman import`ed as localhost/facetalk-base:bookworm (reused when it exists);
#   2. `podman build --isolation chroot` of the repository's Dockerfile with
#      BASE_IMAGE=that base (RUN steps need no container runtime);
#   3. the image mounted (`podman image mount`) and run with chroot as the image's user,
#      with the image's ENV and working directory, the storage volume, /tmp and the home
#      folder as fresh host folders (podman's own runtime fails in this sandbox):
#      the runtime's contents, `facetalk demo` (the MP4 decoded, frames counted),
#      `facetalk serve` (/healthz, /readyz, one job with curl), and `facetalk worker`
#      against a local redis-server (its /v1/workers entry, one job through the queue).
#
# Everything listens on 127.0.0.1 only and is stopped on exit. Options:
#   --no-cache    rebuild every Dockerfile step (a clean build; the base is kept)
#   --new-base    debootstrap the base again too
# Environment: DEBIAN_MIRROR, FACETALK_IMAGE (default localhost/facetalk:check),
# PORT (API, default 18731), REDIS_PORT (default 16391).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$PWD/build/image
BASE=localhost/facetalk-base:bookworm
IMAGE=${FACETALK_IMAGE:-localhost/facetalk:check}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PORT=${PORT:-18731}
REDIS_PORT=${REDIS_PORT:-16391}
NO_CACHE=()
NEW_BASE=0
for arg in "$@"; do
  case $arg in
    --no-cache) NO_CACHE=(--no-cache) ;;
    --new-base) NEW_BASE=1 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

say() { printf '== %s\n' "$*"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (debootstrap, podman storage, mount, chroot)"
mkdir -p "$WORK"
need=()
for pair in podman:podman debootstrap:debootstrap redis-server:redis-server curl:curl; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  say "apt-get install ${need[*]}"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# ---------------------------------------------------------------- 1. the base
if [ "$NEW_BASE" = 1 ] && podman image exists "$BASE"; then podman rmi -f "$BASE" >/dev/null; fi
if podman image exists "$BASE"; then
  say "base $BASE exists: reused"
else
  say "debootstrap bookworm -> $BASE"
  t0=$(now)
  rootfs=$WORK/rootfs
  rm -rf "$rootfs"
  mkdir -p "$WORK"
  debootstrap --variant=minbase --include=python3.11,python3-venv,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$MIRROR"
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
    "$rootfs"/var/cache/debconf/*-old
  tar -C "$rootfs" --numeric-owner -c . \
    | podman import --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$rootfs"
  echo "time: base $(since "$t0") s"
fi

# ---------------------------------------------------------------- 2. the image
say "podman build --isolation chroot ${NO_CACHE[*]} -> $IMAGE"
previous=$(podman image inspect "$IMAGE" --format '{{.Id}}' 2>/dev/null || true)
t0=$(now)
# --format docker keeps HEALTHCHECK (the OCI image format has no field for it).
# pip inside the build trusts what this host trusts (a TLS-intercepting proxy's CA, if any):
# the host's bundle is mounted for the RUN steps only and never lands in a layer.
HOST_CA=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
CA_ARGS=()
[ -f "$HOST_CA" ] && CA_ARGS=(-v "$HOST_CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
podman build --isolation chroot --format docker --layers "${NO_CACHE[@]}" "${CA_ARGS[@]}" \
  --build-arg BASE_IMAGE="$BASE" -t "$IMAGE" -f Dockerfile . > "$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" || true; fail "podman build (log: $WORK/build.log)"; }
echo "time: build $(since "$t0") s (log: build/image/build.log)"
# The tag moved: the previous image is ours and unused (its layers stay as build cache).
current=$(podman image inspect "$IMAGE" --format '{{.Id}}')
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true
fi
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
base_size=$(podman image inspect "$BASE" --format '{{.Size}}')
echo "size: image $((size / 1000000)) MB (base $((base_size / 1000000)) MB, facetalk layers $(((size - base_size) / 1000000)) MB)"
podman image inspect "$IMAGE" --format 'config: user={{.Config.User}} workdir={{.Config.WorkingDir}} volumes={{.Config.Volumes}} cmd={{.Config.Cmd}} healthcheck={{.Config.Healthcheck.Test}}'

# ---------------------------------------------------------------- 3. run it
RUN=$WORK/run
PIDS=()
MOUNTS=()
MNT=""
cleanup() {
  local pid i
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -R "${MOUNTS[$i]}" 2>/dev/null || true; done
  if [ -n "$MNT" ]; then podman image unmount "$IMAGE" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

MNT=$(podman image mount "$IMAGE")
config=$(podman image inspect "$IMAGE" --format '{{json .Config}}')
uid_gid=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["User"])' "$config")
workdir=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["WorkingDir"] or "/")' "$config")
mapfile -t ENVS < <(python3 -c 'import json, sys; print("\n".join(json.loads(sys.argv[1])["Env"]))' "$config")
uid=${uid_gid%%:*}
home=$(awk -F: -v u="$uid" '$3 == u {print $6}' "$MNT/etc/passwd")
[ -n "$home" ] || fail "user $uid not in the image's /etc/passwd"
[ "$uid" != 0 ] || fail "the image runs as root"
ENVS+=("HOME=$home")

# The container's writable places, as a runtime would give them: the storage volume,
# /tmp and the home folder (numba's kernel cache), each a fresh folder owned by the user.
rm -rf "$RUN"
mkdir -p "$RUN/storage" "$RUN/home" "$RUN/tmp" "$RUN/redis"
chown "$uid_gid" "$RUN/storage" "$RUN/home"
chmod 0700 "$RUN/storage"
chmod 1777 "$RUN/tmp"
if touch "$MNT/.rw-probe" 2>/dev/null; then rm -f "$MNT/.rw-probe"; ro=writable; else ro=read-only; fi
echo "image mounted at $MNT ($ro; the storage volume, /tmp and $home are fresh host folders)"
bind() { mount --bind "$1" "$MNT$2"; MOUNTS+=("$MNT$2"); }
mount -t proc proc "$MNT/proc"; MOUNTS+=("$MNT/proc")
mount --rbind /dev "$MNT/dev"; mount --make-rslave "$MNT/dev"; MOUNTS+=("$MNT/dev")
bind "$RUN/storage" /var/lib/facetalk
bind "$RUN/home" "$home"
bind "$RUN/tmp" /tmp

# "${INSIDE[@]}" CMD...: run CMD in the image as its user, with its environment. chroot and
# env exec, so a background one's $! is the facetalk process itself (signals reach it).
INSIDE=(chroot --userspec="$uid_gid" "$MNT" /usr/bin/env -i -C "$workdir" "${ENVS[@]}")
inside() { "${INSIDE[@]}" "$@"; }

say "inside: the runtime"
inside python - <<'PY'
import importlib.util, os, sys
from importlib import metadata
import numpy
print(f"uid {os.getuid()}, python {sys.version.split()[0]}, numpy {numpy.__version__}, "
      f"facetalk {metadata.version('facetalk')}")
absent = [m for m in ("mediapipe", "pytest", "pip", "ruff", "playwright") if importlib.util.find_spec(m)]
assert not absent, f"must not be in the image: {absent}"
assert int(numpy.__version__.split(".")[0]) >= 2, numpy.__version__
models = [f for f in metadata.files("facetalk") if str(f).endswith(".onnx")]
assert models, "no ONNX model in the installed package"
print("models:", ", ".join(f"{f.name} {f.locate().stat().st_size // 1000} kB" for f in models))
print("absent as intended: mediapipe, pytest, pip, ruff, playwright")
PY
inside facetalk doctor > "$RUN/doctor.txt" 2>&1 || { cat "$RUN/doctor.txt"; fail "facetalk doctor"; }
echo "facetalk doctor: exit 0 (report: build/image/run/doctor.txt)"

# probe FILE: frames, size and duration of an MP4, decoded with the image's own PyAV.
probe() {
  inside python - "$1" <<'PY'
import sys
import av
with av.open(sys.argv[1]) as c:
    v = c.streams.video[0]
    frames = sum(1 for _ in c.decode(video=0))
    print(f"{sys.argv[1]}: {frames} frames decoded, {v.codec_context.width}x{v.codec_context.height}, "
          f"{float(v.average_rate):g} fps, {float(c.duration or 0) / 1e6:.2f} s, "
          f"audio streams {len(c.streams.audio)}")
    assert frames > 0
PY
}

say "inside: facetalk demo"
t0=$(now)
inside facetalk demo -q -o /tmp/demo.mp4
echo "time: demo $(since "$t0") s (first run in a fresh container: includes numba's kernel compilation)"
probe /tmp/demo.mp4

# A short WAV (the bundled clip's first 2 s) and the bundled portrait, for the jobs.
inside python - <<'PY'
import shutil, wave
from importlib import resources
assets = resources.files("facetalk") / "assets"
with resources.as_file(assets / "astronaut.png") as p:
    shutil.copy(p, "/tmp/portrait.png")
with resources.as_file(assets / "speech.wav") as p, wave.open(str(p)) as src:
    rate = src.getframerate()
    with wave.open("/tmp/short.wav", "wb") as dst:
        dst.setnchannels(src.getnchannels()); dst.setsampwidth(src.getsampwidth()); dst.setframerate(rate)
        dst.writeframes(src.readframes(2 * rate))
print(f"job inputs: bundled portrait, 2.0 s of the bundled clip at {rate} Hz")
PY

api=http://127.0.0.1:$PORT
wait_url() {  # wait_url URL SECONDS PID: until URL answers 2xx, or fail
  local deadline=$((SECONDS + $2))
  until curl -fsS --max-time 2 -o /dev/null "$1" 2>/dev/null; do
    kill -0 "$3" 2>/dev/null || fail "process $3 ended (see its log in build/image/run/)"
    [ $SECONDS -lt $deadline ] || fail "$1 did not answer within $2 s"
    sleep 0.5
  done
}
job_field() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get(sys.argv[1]))' "$1"; }
submit_job() {  # submit_job: portrait + short WAV; prints the job id
  curl -fsS --max-time 30 -F portrait=@"$RUN/tmp/portrait.png" -F audio=@"$RUN/tmp/short.wav" \
    "$api/v1/jobs" | job_field id
}
finish_job() {  # finish_job LABEL ID START: wait for the job's end, fetch and probe its MP4
  local doc status deadline=$((SECONDS + 300))
  while :; do
    doc=$(curl -fsS --max-time 5 "$api/v1/jobs/$2")
    status=$(job_field status <<<"$doc")
    case $status in succeeded | failed | cancelled) break ;; esac
    [ $SECONDS -lt $deadline ] || fail "job $2 still $status after 300 s"
    sleep 0.5
  done
  echo "$1 job $2: $status in $(since "$3") s (submit to end)"
  [ "$status" = succeeded ] || { echo "$doc"; fail "$1 job $status"; }
  curl -fsS --max-time 30 -o "$RUN/tmp/job-$1.mp4" "$api/v1/jobs/$2/video"
  probe "/tmp/job-$1.mp4"
}
# peak_rss PID: the highest VmHWM (peak resident set) among PID and its descendants, in MB.
peak_rss() {
  local pids=("$1") i=0 kids hwm best=0
  while [ $i -lt ${#pids[@]} ]; do
    read -ra kids <<<"$(cat /proc/"${pids[$i]}"/task/*/children 2>/dev/null)"
    pids+=("${kids[@]}")
    i=$((i + 1))
  done
  for i in "${pids[@]}"; do
    hwm=$(awk '/^VmHWM/ {print int($2 / 1024)}' /proc/"$i"/status 2>/dev/null || true)
    printf '%s(%s) %s MB; ' "$i" "$(tr -d '\0' < /proc/"$i"/comm 2>/dev/null)" "${hwm:-?}"
    [ "${hwm:-0}" -gt "$best" ] && best=$hwm
  done
  echo "peak $best MB"
}

say "inside: facetalk serve (embedded queue) on 127.0.0.1:$PORT"
curl -fsS --max-time 2 -o /dev/null "$api/healthz" 2>/dev/null && fail "port $PORT is already in use"
t0=$(now)
"${INSIDE[@]}" facetalk serve --host 127.0.0.1 --port "$PORT" --workers 1 > "$RUN/serve.log" 2>&1 &
serve_pid=$!; PIDS+=("$serve_pid")
wait_url "$api/healthz" 120 "$serve_pid"
echo "/healthz: $(curl -fsS "$api/healthz") after $(since "$t0") s"
wait_url "$api/readyz" 120 "$serve_pid"
echo "/readyz: $(curl -fsS "$api/readyz")"
t0=$(now); id=$(submit_job)
finish_job embedded "$id" "$t0"
echo "serve process tree, peak RSS: $(peak_rss "$serve_pid")"
kill -TERM "$serve_pid"
t0=$(now); wait "$serve_pid" && rc=0 || rc=$?
echo "serve stopped by SIGTERM in $(since "$t0") s, exit status $rc"
curl -fsS --max-time 2 -o /dev/null "$api/healthz" 2>/dev/null && fail "something still answers on port $PORT"

say "inside: facetalk serve + facetalk worker, redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN/redis" --save '' --appendonly no \
  > "$RUN/redis.log" 2>&1 &
PIDS+=("$!")
queue=redis://127.0.0.1:$REDIS_PORT/0
"${INSIDE[@]}" facetalk serve --host 127.0.0.1 --port "$PORT" --queue "$queue" --storage /var/lib/facetalk/queue \
  > "$RUN/serve-queue.log" 2>&1 &
serve_pid=$!; PIDS+=("$serve_pid")
wait_url "$api/healthz" 120 "$serve_pid"
# A job submitted before any worker runs waits in Celery's Redis list, named after the
# queue: what the KEDA ScaledObject (deploy/kubernetes/components/keda) counts.
tq=$(now); qid=$(submit_job)
deadline=$((SECONDS + 30))
until [ "$(redis-cli -p "$REDIS_PORT" llen facetalk)" -ge 1 ]; do
  [ $SECONDS -lt $deadline ] || fail "no message in the Redis list 'facetalk' 30 s after a submission"
  sleep 0.5
done
echo "redis: LLEN facetalk = $(redis-cli -p "$REDIS_PORT" llen facetalk) with job $qid waiting, no worker yet"
# Without a worker the API must not be ready (why the KEDA ScaledObject keeps one worker).
code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "$api/readyz")
echo "/readyz with no worker: HTTP $code"
[ "$code" = 503 ] || fail "/readyz answered $code with no worker, expected 503"
t0=$(now)
"${INSIDE[@]}" facetalk worker --queue "$queue" --storage /var/lib/facetalk/queue --concurrency 1 \
  --name facetalk@image-check > "$RUN/worker.log" 2>&1 &
worker_pid=$!; PIDS+=("$worker_pid")
deadline=$((SECONDS + 120))
until curl -fsS --max-time 2 "$api/v1/workers" 2>/dev/null | python3 -c '
import json, sys
ws = json.load(sys.stdin)
ws = ws.get("workers", ws) if isinstance(ws, dict) else ws
sys.exit(0 if any(w.get("name") == "facetalk@image-check" and w.get("alive") for w in ws) else 1)'; do
  kill -0 "$worker_pid" 2>/dev/null || fail "the worker ended (build/image/run/worker.log)"
  [ $SECONDS -lt $deadline ] || fail "the worker did not appear alive in /v1/workers within 120 s"
  sleep 0.5
done
echo "/v1/workers: facetalk@image-check alive after $(since "$t0") s"
wait_url "$api/readyz" 60 "$serve_pid"
echo "/readyz: $(curl -fsS "$api/readyz")"
finish_job queue "$qid" "$tq"
echo "redis: LLEN facetalk = $(redis-cli -p "$REDIS_PORT" llen facetalk) after it"
echo "worker process tree, peak RSS: $(peak_rss "$worker_pid")"
curl -fsS "$api/v1/workers" | python3 -c '
import json, sys
ws = json.load(sys.stdin)
ws = ws.get("workers", ws) if isinstance(ws, dict) else ws
for w in ws:
    print("worker", w.get("name"), "alive", w.get("alive"), "jobs", w.get("jobs"), "concurrency", w.get("concurrency"))'
for pid in "$worker_pid" "$serve_pid"; do
  kill -TERM "$pid"; t0=$(now); wait "$pid" && rc=0 || rc=$?
  echo "process $pid stopped by SIGTERM in $(since "$t0") s, exit status $rc"
done
dangling=$(podman images --filter dangling=true --quiet | wc -l)
echo "podman: $dangling untagged images (earlier builds' stages, build cache; 'podman image prune' frees them)"
say "image check passed: $IMAGE"
