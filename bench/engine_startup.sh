#!/usr/bin/env bash
# Start-up time of gpumod-test-engine binaries, side by side in one run (docs/engine.md
# "Start-up"). For each of N rounds and each scenario the binaries run one after the other
# (interleaved, so a busy machine slows them alike); the medians are printed at the end.
#
#   bench/engine_startup.sh [-n ROUNDS] ENGINE [ENGINE...]
#
# Scenarios (protocol llamacpp, which binds its port at once; 127.0.0.1, a free port):
#   exit         exec -> exit of `ENGINE --bogus` (refused after argument parsing: the cost of
#                loading and initialising the binary and its shared libraries); the same for
#                /bin/true is printed as the floor (what fork+exec+wait costs from here)
#   connect      exec -> first successful TCP connect (--load-ms 0)
#   health0      exec -> first GET /health answered 200 (--load-ms 0)
#   health200    exec -> first GET /health answered 200 (--load-ms 200); "over" is the time
#                beyond the configured 200 ms
# Polling: a new connection every 0.2 ms until one succeeds (and answers 200).
set -euo pipefail

rounds=20
if [[ "${1:-}" == "-n" ]]; then
  rounds="$2"
  shift 2
fi
if [[ $# -lt 1 ]]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi

exec python3 - "$rounds" "$@" <<'PY'
import os, signal, socket, statistics, subprocess, sys, time

rounds = int(sys.argv[1])
engines = sys.argv[2:]
env = {k: v for k, v in os.environ.items() if k != "GPUMOD_SIM_DIR"}
POLL = 0.0002


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def try_health(port):
    """Status code of GET /health, or None when nothing accepts the connection yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = b""
            while b"\r\n" not in head:
                part = s.recv(256)
                if not part:
                    return None
                head += part
            return int(head.split(b" ", 2)[1])
    except (ConnectionRefusedError, ConnectionResetError):
        return None


def try_connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except ConnectionRefusedError:
        return False


def start(engine, load_ms):
    port = free_port()
    args = [engine, "--port", str(port), "--protocol", "llamacpp", "--model", "m",
            "--vram-mb", "1", "--load-ms", str(load_ms)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port, t0


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until(check, proc, deadline_s=20):
    end = time.perf_counter() + deadline_s
    while time.perf_counter() < end:
        if check():
            return time.perf_counter()
        if proc.poll() is not None:
            raise RuntimeError(f"engine exited with {proc.returncode}")
        time.sleep(POLL)
    raise RuntimeError("engine did not come up in time")


def scenario_exit(engine):
    t0 = time.perf_counter()
    subprocess.run([engine, "--bogus"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def scenario_connect(engine):
    proc, port, t0 = start(engine, 0)
    try:
        return wait_until(lambda: try_connect(port), proc) - t0
    finally:
        stop(proc)


def scenario_health(engine, load_ms):
    proc, port, t0 = start(engine, load_ms)
    try:
        return wait_until(lambda: try_health(port) == 200, proc) - t0
    finally:
        stop(proc)


scenarios = {
    "exit": scenario_exit,
    "connect": scenario_connect,
    "health0": lambda e: scenario_health(e, 0),
    "health200": lambda e: scenario_health(e, 200),
}
samples = {(s, e): [] for s in scenarios for e in engines}
floor = []
for _ in range(rounds):
    floor.append(scenario_exit("/bin/true"))
    for name, run in scenarios.items():
        for engine in engines:
            samples[(name, engine)].append(run(engine))

print(f"# {rounds} rounds, medians in ms (min..max)")
for i, engine in enumerate(engines):
    print(f"engine {i}: {engine}")
print(f"{'scenario':<10} " + " ".join(f"{'engine ' + str(i):>22}" for i in range(len(engines))))
for name in scenarios:
    cells = []
    for engine in engines:
        xs = [x * 1000 for x in samples[(name, engine)]]
        cells.append(f"{statistics.median(xs):7.2f} ({min(xs):6.2f}..{max(xs):6.2f})")
    print(f"{name:<10} " + " ".join(f"{c:>22}" for c in cells))
over = [statistics.median(samples[("health200", e)]) * 1000 - 200 for e in engines]
print(f"{'over 200':<10} " + " ".join(f"{o:22.2f}" for o in over))
print(f"/bin/true exit: {statistics.median(floor) * 1000:.2f} ms")
PY
