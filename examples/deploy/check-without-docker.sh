#!/usr/bin/env bash
# What can be checked of the Dockerfile and the systemd unit without a Docker daemon
# or a running systemd. Run as root on Linux (it switches to uid 10001 and makes a
# network namespace), from anywhere in the repository:
#
#   sudo examples/deploy/check-without-docker.sh [python3.12]
#
# 1. The image's build stage: the files it copies (minus bytecode, as
#    Dockerfile.dockerignore has it), then its `pip install` into a fresh virtual
#    environment, with the given Python (the image's is 3.12).
# 2. The image's final stage: `trio-sse serve` with the ENTRYPOINT's arguments, as
#    uid:gid 10001:10001 with no home, the ENV's variables and nothing else, in a
#    network namespace of its own (as a container has, so port 8000 is free); the
#    HEALTHCHECK command, read from the Dockerfile, passes as the same user; and
#    fails once the server is gone.
# 3. The systemd unit: `systemd-analyze verify`, and `systemd-analyze security`'s
#    exposure score, with ExecStart pointed at the environment from step 1.
#
# Not checked: the base image, useradd, COPY --from, Docker's own reading of the
# Dockerfile, and running under a real systemd.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${1:-python3.12}
if [ "$(id -u)" -ne 0 ]; then
    echo "run as root: it switches to uid 10001 and makes a network namespace" >&2
    exit 2
fi

if ! setpriv --reuid=10001 --regid=10001 --clear-groups "$python" -c pass 2>/dev/null; then
    echo "uid 10001 cannot run $python (a Python under /root?): pass one it can," \
        "e.g. /usr/bin/python3" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"

echo "== 1. build stage: pip install into a fresh venv ($("$python" --version))"
mkdir "$work/src"
cp pyproject.toml README.md LICENSE "$work/src/"
cp -r trio_sse "$work/src/"
find "$work/src" \( -name __pycache__ -o -name '*.py[co]' \) -prune -exec rm -rf {} +
venv="$work/opt/trio-sse"
(
    cd "$work/src"
    env -u PYTHONPATH "$python" -m venv "$venv"
    env -u PYTHONPATH "$venv/bin/pip" install --quiet --no-cache-dir \
        --disable-pip-version-check ".[redis]"
)

echo "== 2. final stage: serve as uid 10001 in its own network namespace"
# The HEALTHCHECK's CMD array, as Docker would run it (exec form).
healthcheck=$("$python" - <<'PY'
import json, re, shlex
text = open("examples/deploy/Dockerfile").read().replace("\\\n", " ")
found = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
print(shlex.join(json.loads(found[1])))
PY
)
entrypoint=$("$python" - <<'PY'
import json, re, shlex
text = open("examples/deploy/Dockerfile").read()
print(shlex.join(json.loads(re.search(r"^ENTRYPOINT (\[.*\])\s*$", text, re.M)[1])))
PY
)
as_image_user=(setpriv --reuid=10001 --regid=10001 --clear-groups
    env -i "PATH=$venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/nonexistent)
export work healthcheck entrypoint
# The script below runs in the namespace: its $ expand there, not here.
# shellcheck disable=SC2016
unshare --net bash -euo pipefail -c '
    ip link set lo up
    cd /
    '"$(declare -p as_image_user)"'
    log="$work/serve.log"
    # $entrypoint is trio-sse serve --host 0.0.0.0 --port 8000, found on PATH.
    eval "exec ${as_image_user[*]@Q} $entrypoint" >"$log" 2>&1 &
    server=$!
    trap "kill \$server 2>/dev/null || true" EXIT
    for _ in $(seq 150); do
        if eval "${as_image_user[*]@Q} $healthcheck" 2>/dev/null; then break; fi
        kill -0 "$server" || { cat "$log"; echo "serve exited" >&2; exit 1; }
        sleep 0.2
    done
    eval "${as_image_user[*]@Q} $healthcheck"
    echo "HEALTHCHECK passes; the server runs as: $(ps -o user=,uid=,gid= -p "$server")"
    grep "Running on" "$log"
    eval "${as_image_user[*]@Q} python -c \"import trio_sse.redis\"" \
        && echo "the redis extra is installed: trio_sse.redis imports"
    kill -TERM "$server"
    wait "$server" && echo "SIGTERM: exit status 0"
    if eval "${as_image_user[*]@Q} $healthcheck" 2>/dev/null; then
        echo "HEALTHCHECK passes with no server" >&2
        exit 1
    fi
    echo "HEALTHCHECK fails once the server is gone"
'

echo "== 3. systemd unit"
if command -v systemd-analyze >/dev/null; then
    unit="$work/trio-sse.service"
    sed "s#/opt/trio-sse/bin/trio-sse#$venv/bin/trio-sse#" examples/deploy/trio-sse.service >"$unit"
    systemd-analyze verify "$unit"
    echo "systemd-analyze verify: no complaint"
    systemd-analyze security --offline=true "$unit" | tail -n 1
else
    echo "systemd-analyze is not installed: skipped"
fi
