#!/usr/bin/env bash
# End-to-end check of the docker compose stack, for real, on this machine: build the image, run
# the CPU default (docker-compose.yml) with 2 workers, the dashboard, a stop in the middle of a
# trial, the resume, and down/up. Not in CI (it takes minutes and a Docker Engine); run it from
# the repository root after changing the Dockerfile or a compose file:
#
#   benchmarks/compose_check.sh
#
# It uses its own compose project (hpsearch-check) and env file, so a stack you run as `hpsearch`
# is never touched, and removes its containers and volumes at the end (KEEP=1 keeps them; a
# failed check keeps them too, for a look, and says how to remove them).
#
# Settings (environment):
#   COMPOSE   "docker compose" (v2) or docker-compose (v1); default: v2 if present, else v1
#   STANDINS  1 (default): build local stand-ins for python:3.11-slim-bookworm and postgres:16
#             from Debian packages (debootstrap + docker import; for machines that cannot reach
#             an image registry) and use them; 0: the real images (docker pulls them)
#   OFFLINE   1 (default with STANDINS=1): pip-download the wheels on this host into
#             docker/wheels/ and build with PIP_NO_INDEX=1, so no container reaches the network
#   N         trials per worker in the first study (default 3)
#   DASHBOARD_PORT  host port of the dashboard, 127.0.0.1 only (default 8080)
#   POSTGRES_PORT   host port of PostgreSQL, 127.0.0.1 only (default: a free one)
#   WORK      scratch folder (default /tmp/hpsearch-compose-check)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
STANDINS=${STANDINS:-1}
OFFLINE=${OFFLINE:-$STANDINS}
N=${N:-3}
DASHBOARD_PORT=${DASHBOARD_PORT:-8080}
free_port() {
    python3 -c "import socket; s = socket.create_server(('127.0.0.1', 0)); print(s.getsockname()[1])"
}
POSTGRES_PORT=${POSTGRES_PORT:-$(free_port)}
WORK=${WORK:-/tmp/hpsearch-compose-check}
KEEP=${KEEP:-0}
PROJECT=hpsearch-check
PYTHON_STANDIN=hpsearch-standin/python:3.11-bookworm
POSTGRES_STANDIN=hpsearch-standin/postgres:15-bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# Compose reads these from the shell before the env file: only the env file may set them here.
unset COMPOSE_PROJECT_NAME POSTGRES_USER POSTGRES_PASSWORD POSTGRES_DB BASE_IMAGE POSTGRES_IMAGE \
      HPSEARCH_IMAGE PIP_NO_INDEX HPSEARCH_EXPERIMENT HPSEARCH_TRIALS_PER_WORKER HPSEARCH_ARGS \
      HPSEARCH_DATA HPSEARCH_WORKERS_PER_DEVICE TORCH_INDEX_URL
mkdir -p "$WORK"
START=$SECONDS

say() { printf '[%s +%4ds] %s\n' "$(date -u +%H:%M:%S)" $((SECONDS - START)) "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*"
    if [ -n "${ENV_FILE:-}" ] && [ -f "$ENV_FILE" ]; then
        compose logs --no-color --tail 30 2>&1 | tail -80 || true
        echo "The stack is left as it is, for a look; remove it with:"
        echo "  $COMPOSE --env-file $ENV_FILE -p $PROJECT down -v"
    fi
    exit 1
}

if [ -z "${COMPOSE:-}" ]; then
    if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"
    elif command -v docker-compose >/dev/null; then COMPOSE=docker-compose
    else fail "neither 'docker compose' (v2) nor docker-compose (v1) is installed"; fi
fi
docker info >/dev/null 2>&1 || fail "no Docker Engine answers (start dockerd)"
say "docker $(docker version -f '{{.Server.Version}}'), compose: $COMPOSE" \
    "($($COMPOSE version --short 2>/dev/null || $COMPOSE version | head -1))"

compose() { $COMPOSE --env-file "$ENV_FILE" -p "$PROJECT" -f docker-compose.yml "$@"; }
# A service's containers (stopped ones too), found by compose's labels (v1 and v2 alike).
containers() {
    docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1"
}
exit_codes() {  # "0 0 ": the exit codes of a service's containers, sorted
    for c in $(containers "$1"); do docker inspect -f '{{.State.ExitCode}}' "$c"; done |
        sort | tr '\n' ' '
}
all_exited() {  # the service has containers, and every one of them has exited
    local ids
    ids=$(containers "$1")
    [ -n "$ids" ] || return 1
    for c in $ids; do [ "$(docker inspect -f '{{.State.Status}}' "$c")" = exited ] || return 1; done
}
sql() { docker exec "$(containers postgres)" psql -U hpsearch -d hpsearch -Atc "$1"; }
states() {  # a study's trials by state: "COMPLETE 2,FAIL 2"
    sql "SELECT t.state, count(*) FROM trials t JOIN studies s USING (study_id)
         WHERE s.study_name = '$1' GROUP BY t.state ORDER BY t.state" |
        tr '|\n' ' ,' | sed 's/,$//'
}
count() {  # count STUDY STATE
    sql "SELECT count(*) FROM trials t JOIN studies s USING (study_id)
         WHERE s.study_name = '$1' AND t.state = '$2'"
}
wait_until() {  # wait_until SECONDS WHAT COMMAND...: run COMMAND every 2 s until it succeeds
    local limit=$1 what=$2 t0=$SECONDS
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ $((SECONDS - t0)) -lt "$limit" ] || fail "timed out after ${limit}s waiting for $what"
        sleep 2
    done
}
api() {  # api PATH: GET http://127.0.0.1:$DASHBOARD_PORT/PATH, the JSON it answers
    python3 -c '
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}{sys.argv[2]}", timeout=10) as reply:
    print(json.dumps(json.load(reply)))' "$DASHBOARD_PORT" "$1"
}
summary() {  # the study page's API: "name: N trials, {state: count}"
    api "/api/studies/$1" | python3 -c '
import collections, json, sys
study = json.load(sys.stdin)
name, trials = study["name"], study["trials"]
states = dict(sorted(collections.Counter(t["state"] for t in trials).items()))
print(f"{name}: {len(trials)} trials, {states}")'
}

# ----------------------------------------------------------------------------- 1. base images
if [ "$STANDINS" = 1 ]; then
    say "STAND-IN images, not the official ones (no image registry needed):"
    echo "    $PYTHON_STANDIN    for python:3.11-slim-bookworm: Debian bookworm's"
    echo "        python3 + python3-venv (Python 3.11.2)"
    echo "    $POSTGRES_STANDIN  for postgres:16: Debian bookworm's PostgreSQL 15, with an"
    echo "        entrypoint (benchmarks/compose_standins/) that honours POSTGRES_USER/PASSWORD/DB"
    standin() {  # standin IMAGE PACKAGES: IMAGE-rootfs, a Debian root file system with PACKAGES
        local root="$WORK/rootfs"
        command -v debootstrap >/dev/null ||
            fail "the stand-ins need debootstrap (apt-get install debootstrap)"
        rm -rf "$root"
        nice -n 10 debootstrap --variant=minbase --include="$2" bookworm "$root" "$MIRROR" \
            > "$WORK/debootstrap.log" 2>&1 || fail "debootstrap failed: see $WORK/debootstrap.log"
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*
        tar --numeric-owner -C "$root" -c . |
            docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$1-rootfs" >/dev/null
        rm -rf "$root"
    }
    if ! docker image inspect "$PYTHON_STANDIN" >/dev/null 2>&1; then
        standin "$PYTHON_STANDIN" python3,python3-venv
        docker tag "$PYTHON_STANDIN-rootfs" "$PYTHON_STANDIN"
        docker rmi "$PYTHON_STANDIN-rootfs" >/dev/null
    fi
    if ! docker image inspect "$POSTGRES_STANDIN" >/dev/null 2>&1; then
        standin "$POSTGRES_STANDIN" postgresql-15
        nice -n 10 docker build -t "$POSTGRES_STANDIN" --build-arg ROOTFS="$POSTGRES_STANDIN-rootfs" \
            benchmarks/compose_standins > "$WORK/standin-build.log" 2>&1 ||
            fail "the PostgreSQL stand-in did not build: see $WORK/standin-build.log"
        docker rmi "$POSTGRES_STANDIN-rootfs" >/dev/null
    fi
    for image in "$PYTHON_STANDIN" "$POSTGRES_STANDIN"; do
        ok "$image: $(docker image inspect -f '{{.Created}}' "$image" | cut -c1-19)," \
           "$(( $(docker image inspect -f '{{.Size}}' "$image") / 1000000 )) MB"
    done
    BASE_IMAGE=$PYTHON_STANDIN
    POSTGRES_IMAGE=$POSTGRES_STANDIN
else
    BASE_IMAGE=python:3.11-slim-bookworm
    POSTGRES_IMAGE=postgres:16
fi

# ----------------------------------------------------------------------------- 2. the image
if [ "$OFFLINE" = 1 ]; then
    say "wheels for an offline build: pip download on this host into docker/wheels/"
    torch_pin=$(sed -n 's/^ARG TORCH_VERSION=//p' Dockerfile)
    torchvision_pin=$(sed -n 's/^ARG TORCHVISION_VERSION=//p' Dockerfile)
    nice -n 10 pip download -q -d docker/wheels "torch==$torch_pin" \
        "torchvision==$torchvision_pin" 'setuptools>=68' "$REPO[postgres]" \
        > "$WORK/pip-download.log" 2>&1 || fail "pip download failed: see $WORK/pip-download.log"
    rm -f docker/wheels/hpsearch-*  # the package itself is built from the context
    ok "$(ls docker/wheels/*.whl | wc -l) wheels, $(du -sh docker/wheels | cut -f1)"
fi

ENV_FILE=$WORK/check.env
PASSWORD=check-$RANDOM$RANDOM
write_env() {  # write_env STUDY_ARGS TRIALS_PER_WORKER: .env.example with this check's values
    sed -e "s|^COMPOSE_PROJECT_NAME=.*|COMPOSE_PROJECT_NAME=$PROJECT|" \
        -e "s|^POSTGRES_PASSWORD=.*|POSTGRES_PASSWORD=$PASSWORD|" \
        -e "s|^POSTGRES_PORT=.*|POSTGRES_PORT=$POSTGRES_PORT|" \
        -e "s|^DASHBOARD_PORT=.*|DASHBOARD_PORT=$DASHBOARD_PORT|" \
        -e "s|^HPSEARCH_TRIALS_PER_WORKER=.*|HPSEARCH_TRIALS_PER_WORKER=$2|" \
        -e "s|^HPSEARCH_ARGS=.*|HPSEARCH_ARGS=$1|" \
        -e "s|^BASE_IMAGE=.*|BASE_IMAGE=$BASE_IMAGE|" \
        -e "s|^POSTGRES_IMAGE=.*|POSTGRES_IMAGE=$POSTGRES_IMAGE|" \
        -e "s|^HPSEARCH_IMAGE=.*|HPSEARCH_IMAGE=hpsearch:check|" \
        -e "s|^PIP_NO_INDEX=.*|PIP_NO_INDEX=$OFFLINE|" .env.example > "$ENV_FILE"
}
# A toy task small enough for 2 shared cores, with a fixed trial that must run exactly once.
TINY="data.train_per_class=40 data.val_per_class=20 data.test_per_class=20
data.synthetic.source_per_class=100 data.synthetic.source_epochs=3 study.sampler=random
search_space={hp.epochs:{type:int,low:1,high:2}}"
TINY=$(echo $TINY)
write_env "$TINY ft.epochs=3 study.enqueue=[{hp.lr:0.0123}] study.name=check" "$N"
compose down -v --remove-orphans >/dev/null 2>&1 || true  # a failed run's leftovers
python3 -c "import socket; socket.create_server(('127.0.0.1', $DASHBOARD_PORT)).close()" \
    2>/dev/null || fail "127.0.0.1:$DASHBOARD_PORT is taken; choose another DASHBOARD_PORT"

say "build the image (Dockerfile on $BASE_IMAGE): $COMPOSE build init"
nice -n 10 $COMPOSE --env-file "$ENV_FILE" -p "$PROJECT" -f docker-compose.yml build init \
    > "$WORK/build.log" 2>&1 ||
    { tail -30 "$WORK/build.log"; fail "the image build failed: see $WORK/build.log"; }
docker run --rm hpsearch:check python -c "
import hpsearch, optuna, psycopg2, torch, torchvision
print('    image: torch', torch.__version__, 'torchvision', torchvision.__version__, 'optuna',
      optuna.__version__, 'hpsearch', hpsearch.__file__)"
echo "    image size: $(( $(docker image inspect -f '{{.Size}}' hpsearch:check) / 1000000 )) MB"

# ----------------------------------------------------------------------------- 3. up, 2 workers
say "up -d --scale worker=2: study 'check', $N trials per worker"
compose up -d --scale worker=2 > "$WORK/up1.log" 2>&1 || { cat "$WORK/up1.log"; fail "up failed"; }
wait_until 900 "init to finish" all_exited init
[ "$(exit_codes init)" = "0 " ] || fail "init exited $(exit_codes init)"
ready=$(compose logs --no-color init | grep -o "study 'check' is ready.*") ||
    fail "init did not report the study"
ok "init exited 0: $ready"
wait_until 1800 "both workers to finish" all_exited worker
[ "$(exit_codes worker)" = "0 0 " ] || fail "workers exited $(exit_codes worker)"
[ "$(sql "SELECT count(*) FROM studies WHERE study_name = 'check'")" = 1 ] ||
    fail "not one study 'check'"
got=$(states check)
[ "$got" = "COMPLETE $((2 * N))" ] || fail "study 'check': expected COMPLETE $((2 * N)), got $got"
ok "workers exited 0 0; study 'check' (stored once): $got"
fixed=$(sql "SELECT count(*) FROM trial_params p JOIN trials t USING (trial_id)
             JOIN studies s USING (study_id) WHERE s.study_name = 'check'
             AND p.param_name = 'hp.lr' AND p.param_value = 0.0123")
[ "$fixed" = 1 ] || fail "the fixed trial hp.lr=0.0123 ran $fixed times, not once"
ok "the fixed trial (hp.lr=0.0123) ran once, although init and both workers set the study up"
for w in $(containers worker); do
    docker logs "$w" 2>&1 |
        sed -nE 's/.*(trial [0-9]+): (tau=[0-9]+).*(hp_lr=[0-9.e-]+).*(ft_val_acc=[0-9.]+).*/\1: \2 \3 \4/p' |
        sed "s/^/      $(docker inspect -f '{{.Name}}' "$w" | tr -d /) /"
done

say "dashboard on 127.0.0.1:$DASHBOARD_PORT"
published=$(docker port "$(containers dashboard)" 8080; docker port "$(containers postgres)" 5432)
[ "$(echo $published)" = "127.0.0.1:$DASHBOARD_PORT 127.0.0.1:$POSTGRES_PORT" ] ||
    fail "published ports: $(echo $published)"
ok "ports published on 127.0.0.1 only: $(echo $published)"
wait_until 600 "the dashboard to answer" api /api/studies
study_id=$(api /api/studies | python3 -c '
import json, sys
print(next(s["study_id"] for s in json.load(sys.stdin)["study_summaries"]
           if s["study_name"] == "check"))')
got=$(summary "$study_id")
[ "$got" = "check: $((2 * N)) trials, {'Complete': $((2 * N))}" ] || fail "dashboard API: $got"
ok "GET /api/studies/$study_id -> $got"

# ----------------------------------------------------------------------------- 4. stop, resume
# One trial per worker, long enough (30 FT epochs of 250 steps) to stop it in the middle of FT.
write_env "$TINY data.train_per_class=400 ft.epochs=30 ft.batch_size=8 study.name=check_stop" 1
say "study 'check_stop', 1 long trial per worker: up, then stop worker in the middle of FT"
compose up -d --scale worker=2 > "$WORK/up2.log" 2>&1 || { cat "$WORK/up2.log"; fail "up failed"; }
in_ft() {  # a RUNNING trial of check_stop whose checkpoint is after >= 3 of its 30 FT epochs
    [ "$(sql "SELECT count(*) FROM trials t JOIN studies s USING (study_id)
              JOIN trial_system_attributes a USING (trial_id)
              WHERE s.study_name = 'check_stop' AND t.state = 'RUNNING'
              AND a.key = 'hpsearch:checkpoint'
              AND (a.value_json::json->>'ft_epoch')::int >= 3")" -ge 1 ]
}
wait_until 1800 "a trial in the middle of FT" in_ft
at=$(sql "SELECT string_agg('trial ' || t.number || ' after FT epoch '
                            || (a.value_json::json->>'ft_epoch'), ', ' ORDER BY t.number)
          FROM trials t JOIN studies s USING (study_id) JOIN trial_system_attributes a USING (trial_id)
          WHERE s.study_name = 'check_stop' AND t.state = 'RUNNING' AND a.key = 'hpsearch:checkpoint'")
ok "before the stop: $(states check_stop); checkpoints: $at"
compose stop worker > "$WORK/stop.log" 2>&1
[ "$(exit_codes worker)" = "143 143 " ] ||
    fail "stopped workers exited '$(exit_codes worker)', expected 143 (SIGTERM) twice"
got=$(states check_stop)
failed_n=$(count check_stop FAIL)
[ "$(count check_stop RUNNING)" = 0 ] || fail "after the stop: trials left RUNNING ($got)"
[ "$failed_n" -ge 1 ] && [ "$(count check_stop WAITING)" = "$failed_n" ] ||
    fail "after the stop: $got; expected every FAIL re-queued as WAITING"
requeued=$(sql "SELECT count(*) FROM trials w JOIN studies s USING (study_id)
                JOIN trial_system_attributes a USING (trial_id)
                WHERE s.study_name = 'check_stop' AND w.state = 'WAITING'
                AND a.key = 'failed_trial' AND a.value_json::int IN (
                    SELECT number FROM trials f WHERE f.study_id = w.study_id AND f.state = 'FAIL')")
[ "$requeued" = "$failed_n" ] ||
    fail "after the stop: $requeued of $failed_n failed trials have a WAITING retry"
ok "workers exited 143 143; no trial RUNNING: $got (each FAIL re-queued as a WAITING retry)"
for w in $(containers worker); do
    docker logs "$w" 2>&1 | grep -o "stopped by SIGTERM: .*" | sed 's/^/      /'
done

say "up again: the re-queued trials resume from their checkpoints"
compose up -d --scale worker=2 > "$WORK/up3.log" 2>&1 || { cat "$WORK/up3.log"; fail "up failed"; }
wait_until 1800 "both workers to finish" all_exited worker
[ "$(exit_codes worker)" = "0 0 " ] || fail "workers exited $(exit_codes worker)"
got=$(states check_stop)
[ "$(count check_stop RUNNING)" = 0 ] && [ "$(count check_stop WAITING)" = 0 ] &&
    [ "$(count check_stop FAIL)" = "$failed_n" ] || fail "after the resume: $got"
resumed=$(sql "SELECT t.number || ' resumed trial ' || r.value_json || ' from ' || c.value_json
                      || ', ran ' || e.value_json || ' of 30 FT epochs'
               FROM trials t JOIN studies s USING (study_id)
               JOIN trial_user_attributes e
                 ON e.trial_id = t.trial_id AND e.key = 'ft_epochs_run'
               JOIN trial_user_attributes r
                 ON r.trial_id = t.trial_id AND r.key = 'resumed_from_trial'
               JOIN trial_user_attributes c
                 ON c.trial_id = t.trial_id AND c.key = 'resumed_from_checkpoint'
               WHERE s.study_name = 'check_stop' AND t.state = 'COMPLETE'
               AND r.value_json <> 'null' ORDER BY t.number")
[ "$(echo "$resumed" | grep -c resumed)" = "$failed_n" ] ||
    fail "$failed_n trials were stopped, but these completed as resumed: $resumed"
echo "$resumed" | grep -q ' from "ft_epoch_' || fail "none resumed from an FT checkpoint: $resumed"
ok "workers exited 0 0; study 'check_stop': $got"
echo "$resumed" | sed 's/^/      trial /'

# ----------------------------------------------------------------------------- 5. down, up
before_check=$(states check)
before_stop=$(states check_stop)
say "down (the volumes stay), then up again (no workers)"
compose down > "$WORK/down.log" 2>&1
[ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ] ||
    fail "containers left after down"
ok "no containers left; volumes:" \
   "$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | tr '\n' ' ')"
compose up -d --scale worker=0 > "$WORK/up4.log" 2>&1 || { cat "$WORK/up4.log"; fail "up failed"; }
wait_until 900 "init to finish" all_exited init
ready=$(compose logs --no-color init | grep -o "study 'check_stop' is ready.*") ||
    fail "init did not report the study"
ok "init exited $(exit_codes init | tr -d ' '): $ready"
wait_until 600 "the dashboard to answer" api /api/studies
[ "$(states check)" = "$before_check" ] && [ "$(states check_stop)" = "$before_stop" ] ||
    fail "after down/up: check $(states check), check_stop $(states check_stop)"
ok "both studies still there: check $before_check; check_stop $before_stop"
for id in $(api /api/studies | python3 -c '
import json, sys
print(*(s["study_id"] for s in json.load(sys.stdin)["study_summaries"]))'); do
    ok "GET /api/studies/$id -> $(summary "$id")"
done

# ----------------------------------------------------------------------------- 6. GPU overlay
say "GPU overlay, configuration only (no GPU here):" \
    "$COMPOSE -f docker-compose.yml -f docker-compose.gpu.yml config"
$COMPOSE --env-file "$ENV_FILE" -p "$PROJECT" -f docker-compose.yml -f docker-compose.gpu.yml \
    config | python3 -c '
import sys, yaml
worker = yaml.safe_load(sys.stdin)["services"]["worker"]
device = worker["deploy"]["resources"]["reservations"]["devices"]
env = {k: v for k, v in worker["environment"].items() if k in
       ("HPSEARCH_GPU_LOCK_DIR", "HPSEARCH_WORKERS_PER_DEVICE")}
assert device == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}], device
assert env == {"HPSEARCH_GPU_LOCK_DIR": "/gpulocks", "HPSEARCH_WORKERS_PER_DEVICE": "1"}, env
print("    ok: worker reserves", device[0], "with", env)'

if [ "$KEEP" = 1 ]; then
    say "KEEP=1: the stack stays ($COMPOSE --env-file $ENV_FILE -p $PROJECT down -v removes it)"
else
    compose down -v > "$WORK/down.log" 2>&1
    say "removed the check's containers and volumes"
fi
say "PASS ($((SECONDS - START)) s)"
