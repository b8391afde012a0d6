"""Run the real shipshape binary the way the kubelet would run the rendered Deployment.

What is faithful to the pod:
  * the process is the image Entrypoint (/bin/shipshape serve, from nix/image-contract.json)
    as overridden by the container's command/args, run in the image's WorkingDir (/);
  * its environment is the image's Env overlaid with the container's `env`, values resolved
    (plus PATH);
  * every volumeMount exists with the volume's content: ConfigMap keys from the rendered
    ConfigMap (byte for byte), Secret keys from test values, emptyDirs empty;
  * it runs as uid/gid 65532 with no supplementary groups, no capabilities and no_new_privs,
    and file ownership follows the pod's fsGroup (Secrets root:65532 with their defaultMode,
    emptyDirs owned by 65532), so it can write only where the pod could: its emptyDirs (/tmp,
    and /data in dev). The working directory is root-owned and read-only to it, as the image's
    read-only root filesystem is.

What is remapped, and why (no container runtime or mount namespace is used):
  * each mountPath P is a directory ROOT/P under a fresh temporary ROOT, and every env value
    that names a path under a mountPath is rewritten to ROOT/P (e.g. SHIPSHAPE_CONFIG,
    SHIPSHAPE_DATABASE__URL=file:... or sqlite:///data/...): the host has no /etc/shipshape,
    and tests must not create paths in the host's root;
  * SHIPSHAPE_HTTP__LISTEN (and SHIPSHAPE_HTTP__METRICS_LISTEN when set) is set to
    127.0.0.1:<free port> (and the container port it stands for is mapped to that host port): 0.0.0.0:8080 may be taken on a shared machine and a
    test only listens on loopback. Probes and scrapes resolve named ports through the
    manifests and are then sent to the mapped host port.
Everything remapped is listed in `Pod.remapped` and printed by the tests.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

UID = GID = 65532
REPO = Path(__file__).resolve().parents[2]
IMAGE_CONTRACT = REPO / "nix" / "image-contract.json"


def image_config():
    """The image's Entrypoint/Env/User/WorkingDir: from nix/image-contract.json (what nix/image.nix
    builds), else the service contract's entrypoint [shipshape, serve]."""
    if IMAGE_CONTRACT.exists():
        cfg = json.loads(IMAGE_CONTRACT.read_text())["config"]
    else:
        cfg = {"Entrypoint": ["shipshape", "serve"], "Env": [], "User": "65532:65532", "WorkingDir": "/"}
    assert cfg.get("User") == f"{UID}:{GID}", cfg.get("User")
    return cfg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find(docs, kind, name=None):
    out = [d for d in docs if d and d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    return out


def one(docs, kind, name=None):
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected exactly one {kind} {name or ''}, found {len(found)}"
    return found[0]


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) against a label set."""
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        raise AssertionError(f"empty selector {selector} selects everything")
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        op, key, values = e["operator"], e["key"], e.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def app_container(deploy):
    cs = [c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == "shipshape"]
    assert cs, "no container named shipshape"
    return cs[0]


def resolve_container_port(container, port) -> int:
    """A probe/targetPort (name or number) -> the containerPort number."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"port {port!r} is not a named port of container {container['name']}")


def servicemonitor_target(docs, deploy):
    """ServiceMonitor endpoint -> (container port, path): port name -> Service port -> targetPort.
    Every Service it selects (with Flagger: shipshape-primary and shipshape-canary) must lead to
    the same container port."""
    sm = one(docs, "ServiceMonitor")
    ep = sm["spec"]["endpoints"][0]
    svcs = [
        s for s in find(docs, "Service")
        if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    ]
    assert svcs, "the ServiceMonitor selects no Service"
    targets = set()
    for svc in svcs:
        sports = [p for p in svc["spec"]["ports"] if p.get("name") == ep["port"]]
        assert sports, f"Service {svc['metadata']['name']} has no port named {ep['port']!r} (ServiceMonitor)"
        target = sports[0].get("targetPort", sports[0]["port"])
        targets.add(resolve_container_port(app_container(deploy), target))
    assert len(targets) == 1, f"the selected Services lead to different container ports: {targets}"
    return targets.pop(), ep.get("path", "/metrics")


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict

    def json(self):
        return json.loads(self.body)


def http(method, url, body=None, timeout=5.0, headers=None) -> Response:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Response(e.code, e.read(), dict(e.headers))


@dataclass
class Pod:
    docs: list
    deploy: dict
    container: dict
    root: Path
    binary: Path
    secret_values: dict  # (secretName, key) -> str
    env: dict = field(default_factory=dict)
    port_map: dict = field(default_factory=dict)  # containerPort -> host port
    remapped: list = field(default_factory=list)
    writable: list = field(default_factory=list)
    proc: subprocess.Popen | None = None
    stdout_path: Path | None = None
    stderr_path: Path | None = None

    # ---- set-up -------------------------------------------------------------------------
    @classmethod
    def prepare(cls, docs, binary, secret_values, extra_env=None):
        deploy = one(docs, "Deployment", "shipshape")
        container = app_container(deploy)
        root = Path(tempfile.mkdtemp(prefix="shipshape-pod-"))
        os.chmod(root, 0o755)
        pod = cls(docs, deploy, container, root, Path(binary), secret_values)
        pod._materialise_volumes()
        pod._build_env(extra_env or {})
        # The image's binary: a root-owned, world-executable copy (the test user must not be
        # able to modify it, just as in the image).
        (root / "bin").mkdir()
        shutil.copy2(binary, root / "bin" / "shipshape")
        os.chmod(root / "bin" / "shipshape", 0o755)
        return pod

    def host_path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def _materialise_volumes(self):
        spec = self.deploy["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        fs_group = spec.get("securityContext", {}).get("fsGroup")
        for m in self.container.get("volumeMounts", []):
            vol = volumes[m["name"]]
            dest = self.host_path(m["mountPath"])
            dest.mkdir(parents=True, exist_ok=True)
            self.remapped.append(f"volumeMount {m['mountPath']} ({m['name']}) -> {dest}")
            if "configMap" in vol:
                cm = one(self.docs, "ConfigMap", vol["configMap"]["name"])
                mode = vol["configMap"].get("defaultMode", 0o644)
                self._write_keys(dest, cm.get("data", {}), vol["configMap"].get("items"), mode, 0, fs_group)
            elif "secret" in vol:
                name = vol["secret"]["secretName"]
                keys = [i["key"] for i in vol["secret"].get("items", [])]
                data = {}
                for k in keys:
                    assert (name, k) in self.secret_values, f"test has no value for Secret {name} key {k}"
                    data[k] = self.secret_values[(name, k)]
                mode = vol["secret"].get("defaultMode", 0o644)
                self._write_keys(dest, data, vol["secret"].get("items"), mode, 0, fs_group)
            elif "emptyDir" in vol:
                # kubelet: emptyDir is world-writable (0777); with fsGroup it belongs to that group.
                os.chown(dest, UID, fs_group if fs_group is not None else GID)
                os.chmod(dest, 0o2770 if fs_group is not None else 0o777)
                self.writable.append(dest)
            else:
                raise AssertionError(f"volume type of {m['name']} not simulated: {sorted(vol)}")
            if "emptyDir" not in vol:
                os.chmod(dest, 0o555)  # projected volumes are read-only directories
        # Every parent directory created for the mounts stays root-owned 0755 (read-only root fs).

    @staticmethod
    def _write_keys(dest, data, items, mode, uid, gid):
        pairs = [(i["key"], i.get("path", i["key"]), i.get("mode", mode)) for i in items] if items else [
            (k, k, mode) for k in data]
        for key, path, m in pairs:
            f = dest / path
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(data[key])
            os.chown(f, uid, gid if gid is not None else 0)
            os.chmod(f, m)

    def _rewrite(self, value: str) -> str:
        mounts = sorted((m["mountPath"] for m in self.container.get("volumeMounts", [])), key=len, reverse=True)
        pattern = re.compile("(" + "|".join(re.escape(p) for p in mounts) + r")(?=/|$)")
        return pattern.sub(lambda mo: str(self.host_path(mo.group(1))), value)

    def _build_env(self, extra_env):
        # The runtime starts from the image's Env; the container's env entries override it.
        env = {"PATH": "/usr/bin:/bin"}
        env.update(dict(kv.split("=", 1) for kv in image_config().get("Env", [])))
        for e in self.container.get("env", []):
            if "value" in e:
                value = e["value"]
            elif "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
                ref = e["valueFrom"]["secretKeyRef"]
                value = self.secret_values[(ref["name"], ref["key"])]
            elif "valueFrom" in e and "configMapKeyRef" in e["valueFrom"]:
                ref = e["valueFrom"]["configMapKeyRef"]
                value = one(self.docs, "ConfigMap", ref["name"])["data"][ref["key"]]
            else:
                raise AssertionError(f"env {e['name']}: source not simulated")
            new = self._rewrite(value)
            if new != value:
                self.remapped.append(f"env {e['name']}={value} -> {new}")
            env[e["name"]] = new
        assert "SHIPSHAPE_HTTP__LISTEN" not in env or env["SHIPSHAPE_HTTP__LISTEN"].startswith("0.0.0.0:")
        # The API listener is the container port named `http` (the contract name).
        port = resolve_container_port(self.container, "http")
        host_port = free_port()
        self.port_map[port] = host_port
        env["SHIPSHAPE_HTTP__LISTEN"] = f"127.0.0.1:{host_port}"
        self.remapped.append(f"listen 0.0.0.0:{port} -> SHIPSHAPE_HTTP__LISTEN=127.0.0.1:{host_port}")
        # The separate metrics listener, when the manifests turn it on, likewise: its
        # container port must be a declared port of the container.
        metrics = env.get("SHIPSHAPE_HTTP__METRICS_LISTEN", "")
        if metrics:
            assert metrics.startswith("0.0.0.0:"), metrics
            mport = int(metrics.rsplit(":", 1)[1])
            assert mport in [p["containerPort"] for p in self.container["ports"]], f"{metrics}: not a container port"
            mhost = free_port()
            self.port_map[mport] = mhost
            env["SHIPSHAPE_HTTP__METRICS_LISTEN"] = f"127.0.0.1:{mhost}"
            self.remapped.append(f"metrics listen {metrics} -> SHIPSHAPE_HTTP__METRICS_LISTEN=127.0.0.1:{mhost}")
        env.update(extra_env)
        self.env = env

    # ---- running ------------------------------------------------------------------------
    def argv(self, *override):
        # Kubernetes: `command` replaces the image Entrypoint, `args` replaces its Cmd.
        img = image_config()
        cmd = self.container.get("command")
        args = self.container.get("args", img.get("Cmd", []) if not cmd else [])
        base = cmd if cmd else img["Entrypoint"]
        argv = list(override) if override else base + args
        exe = argv[0]
        assert exe in ("shipshape", "/bin/shipshape"), f"unexpected command {exe}"
        priv = ["setpriv", f"--reuid={UID}", f"--regid={GID}", "--clear-groups", "--no-new-privs",
                "--inh-caps=-all", "--bounding-set=-all"]
        return priv + [str(self.root / "bin" / "shipshape")] + argv[1:]

    def run(self, *args, timeout=30):
        """One-shot subcommand (e.g. `shipshape config`) with the pod's env, as the pod's user."""
        return subprocess.run(self.argv("shipshape", *args), env=self.env, cwd=self.host_path(image_config().get("WorkingDir") or "/"),
                              capture_output=True, text=True, timeout=timeout)

    def start(self):
        self.stdout_path = self.root.parent / (self.root.name + ".stdout")
        self.stderr_path = self.root.parent / (self.root.name + ".stderr")
        self.proc = subprocess.Popen(self.argv(), env=self.env, cwd=self.host_path(image_config().get("WorkingDir") or "/"),
                                     stdout=open(self.stdout_path, "wb"), stderr=open(self.stderr_path, "wb"))
        return self

    def url(self, port, path):
        return f"http://127.0.0.1:{self.port_map[resolve_container_port(self.container, port)]}{path}"

    def probe(self, name):
        p = self.container[name]["httpGet"]
        return http("GET", self.url(p["port"], p["path"]), timeout=self.container[name].get("timeoutSeconds", 1))

    def wait_probe(self, name, budget=None):
        """Poll like the kubelet: every periodSeconds, up to failureThreshold attempts."""
        spec = self.container[name]
        period = spec.get("periodSeconds", 10)
        attempts = spec.get("failureThreshold", 3)
        deadline = time.monotonic() + (budget if budget is not None else period * attempts)
        last = None
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"process exited with {self.proc.returncode} during {name}:\n{self.logs()}")
            try:
                last = self.probe(name)
                if 200 <= last.status < 400:
                    return last
            except OSError as e:
                last = e
            time.sleep(min(period, 0.25))
        raise AssertionError(f"{name} never succeeded (last: {last!r})\n{self.logs()}")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def logs(self, limit=4000):
        out = self.stdout_path.read_text(errors="replace") if self.stdout_path else ""
        err = self.stderr_path.read_text(errors="replace") if self.stderr_path else ""
        return f"--- stdout ---\n{out[-limit:]}\n--- stderr ---\n{err[-limit:]}"

    def terminate(self, timeout):
        """SIGTERM (what the kubelet sends after preStop), wait up to timeout; returns (rc, secs)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        return rc, time.monotonic() - t0

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
        for p in (self.stdout_path, self.stderr_path):
            if p:
                p.unlink(missing_ok=True)


def random_secret() -> str:
    return secrets.token_urlsafe(48)
