#!/usr/bin/env python3
"""Soak: mixed traffic against a real `gpumod serve` on loopback for a bounded time, sampling the
daemon's RSS, open file descriptors and threads every 10 s. Standard library only.

Traffic, all at once: control API reads and POST /request for random models; proxied and
streamed chats (a fifth of the streams hang up half-way); mode switches every 20 s; a SIGHUP
reload every 30 s; a running service SIGKILLed every 60 s. Every request must get an HTTP answer
(any status): a connection error or timeout counts as unanswered. At the end it prints the
samples and the growth after warm-up, and exits 1 when a request went unanswered.

Usage: bench/soak/soak.py --gpumod build-release/app/gpumod [--minutes 30] [--warmup-minutes 3]
The daemon runs its embedded demo (simulated GPU, test engines) in a temporary state directory
and is stopped, with its services, at the end.
"""
import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

MODELS = ["qwen3-coder", "vllm-embedding", "vllm-embedding-code", "nemotron-3-nano", "devstral-small-2"]
CHAT_MODELS = ["qwen3-coder", "nemotron-3-nano", "devstral-small-2"]
MODES = ["code", "rag", "nemotron", "blank"]


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_kind = {}

    def add(self, kind, outcome):
        with self.lock:
            self.by_kind.setdefault(kind, {}).setdefault(outcome, 0)
            self.by_kind[kind][outcome] += 1

    def unanswered(self):
        with self.lock:
            return sum(n for kinds in self.by_kind.values() for o, n in kinds.items() if o == "unanswered")


def call(port, method, path, body=None, timeout=120, stream_cut=False):
    """One exchange on a fresh connection: the status ("200", "502", ...; "200 cut" when the
    body broke off after the status came, as a stream does when its service is killed), or
    None when no answer came at all."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        res = conn.getresponse()
    except (OSError, http.client.HTTPException):
        conn.close()
        return None
    try:
        if stream_cut:
            res.read(64)  # take a little of the stream, then vanish
            conn.sock.close()
        else:
            res.read()
        return str(res.status)
    except (OSError, http.client.HTTPException):
        return f"{res.status} cut"
    finally:
        conn.close()


def worker(stop, port, counters, kind, step):
    while not stop.is_set():
        try:
            status = step(port)
        except Exception:  # a bug in the harness must not look like an unanswered request
            status = "harness-error"
        counters.add(kind, "unanswered" if status is None else str(status))


def control_step(port):
    r = random.random()
    if r < 0.4:
        return call(port, "GET", random.choice(["/status", "/services", "/modes", "/metrics", "/healthz"]))
    if r < 0.8:
        return call(port, "POST", "/request", {"model": random.choice(MODELS), "timeout_s": 60})
    return call(port, "GET", "/plan?model=" + random.choice(MODELS))


def chat_step(port):
    body = {"model": random.choice(CHAT_MODELS), "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 16}
    return call(port, "POST", "/v1/chat/completions", body)


def stream_step(port):
    body = {"model": random.choice(CHAT_MODELS), "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 32, "stream": True}
    return call(port, "POST", "/v1/chat/completions", body, stream_cut=random.random() < 0.2)


def sample(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    rss_kib = int(fields["VmRSS"].split()[0])
    threads = int(fields["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kib, fds, threads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpumod", required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--warmup-minutes", type=float, default=3)
    ap.add_argument("--sample-seconds", type=float, default=10)
    args = ap.parse_args()

    state = tempfile.mkdtemp(prefix="gpumod-soak-")
    port_file = os.path.join(state, "serve.port")
    log = open(os.path.join(state, "daemon.log"), "w")
    daemon = subprocess.Popen([args.gpumod, "serve", "--listen", "127.0.0.1:0", "--port-file", port_file,
                               "--state-dir", state, "--stop-services-on-exit"], stdout=log, stderr=log)
    for _ in range(300):
        if os.path.exists(port_file):
            break
        time.sleep(0.1)
    port = int(open(port_file).read())
    print(f"daemon pid {daemon.pid} on port {port}, state {state}", flush=True)

    stop = threading.Event()
    counters = Counters()
    threads = [threading.Thread(target=worker, args=(stop, port, counters, "control", control_step)) for _ in range(4)]
    threads += [threading.Thread(target=worker, args=(stop, port, counters, "chat", chat_step)) for _ in range(4)]
    threads += [threading.Thread(target=worker, args=(stop, port, counters, "stream", stream_step)) for _ in range(4)]

    def periodic():
        next_switch = next_reload = next_kill = time.time() + 5
        mode = 0
        while not stop.is_set():
            now = time.time()
            if now >= next_switch:
                status = call(port, "POST", f"/modes/{MODES[mode % len(MODES)]}/switch", {}, timeout=180)
                counters.add("mode switch", "unanswered" if status is None else str(status))
                mode += 1
                next_switch = now + 20
            if now >= next_reload:
                daemon.send_signal(signal.SIGHUP)
                counters.add("reload (SIGHUP)", "sent")
                next_reload = now + 30
            if now >= next_kill:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request("GET", "/status")
                    services = json.loads(conn.getresponse().read())["services"]
                    pids = [s["pid"] for s in services if s.get("pid", 0) > 0 and s.get("state") == "ready"]
                    if pids:
                        os.kill(random.choice(pids), signal.SIGKILL)
                        counters.add("service killed", "sent")
                except (OSError, ValueError, KeyError, http.client.HTTPException):
                    counters.add("service killed", "skipped")
                next_kill = now + 60
            stop.wait(1)

    threads.append(threading.Thread(target=periodic))
    for t in threads:
        t.start()

    samples = []
    start = time.time()
    end = start + args.minutes * 60
    while time.time() < end and daemon.poll() is None:
        rss, fds, nthreads = sample(daemon.pid)
        samples.append((time.time() - start, rss, fds, nthreads))
        print(f"t={samples[-1][0]:7.0f}s rss={rss / 1024:7.1f} MiB fds={fds:4d} threads={nthreads:4d}", flush=True)
        time.sleep(args.sample_seconds)
    stop.set()
    for t in threads:
        t.join()
    alive = daemon.poll() is None
    if alive:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(120)
        except subprocess.TimeoutExpired:
            daemon.kill()

    print("\nrequests:")
    for kind, outcomes in sorted(counters.by_kind.items()):
        total = sum(outcomes.values())
        print(f"  {kind:16s} {total:8d}  " + ", ".join(f"{o}: {n}" for o, n in sorted(outcomes.items())))
    warm = [s for s in samples if s[0] >= args.warmup_minutes * 60]
    if len(warm) >= 6:
        first, last = warm[:3], warm[-3:]
        for i, name, unit, scale in ((1, "rss", "MiB", 1024), (2, "fds", "", 1), (3, "threads", "", 1)):
            a = sum(s[i] for s in first) / 3 / scale
            b = sum(s[i] for s in last) / 3 / scale
            peak = max(s[i] for s in warm) / scale
            print(f"  {name:8s} after warm-up {a:8.1f} {unit}, at the end {b:8.1f} {unit}, peak {peak:8.1f} {unit}")
    unanswered = counters.unanswered()
    print(f"\ndaemon {'alive until the end' if alive else 'DIED'}; unanswered requests: {unanswered}")
    return 0 if alive and unanswered == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
