#!/usr/bin/env python3
"""Checks the Kubernetes manifests and the compose file against the code.

Renders every overlay with `kubectl kustomize` (no cluster needed) and
checks what a typo would silently break in production: probes point at the
health endpoints on a declared port, the grace period outlasts the drain,
Services target ports the pods declare, static discovery names real
Services, and every environment variable set is one the README documents.
"""

import pathlib
import re
import shutil
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
errors = []


def fail(where, message):
    errors.append(f"{where}: {message}")


def documented_variables():
    readme = (ROOT / "README.md").read_text()
    names = set(re.findall(r"`((?:PLATFORM|USERS|CHAT|NOTIFICATIONS|SEARCH|STORAGE|GATEWAY|<SERVICE>)_[A-Z_]+)`", readme))
    return {n.replace("<SERVICE>_", "") if n.startswith("<SERVICE>_") else n for n in names}


def is_documented(name, documented):
    if name in documented or name == "HOST_IP":
        return True
    # `<SERVICE>_KEY` in the README covers USERS_KEY, CHAT_KEY, ...
    _, _, key = name.partition("_")
    return key in documented


def seconds(value):
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    if not match:
        return None
    n, unit = int(match.group(1)), match.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def check_overlay(overlay, documented):
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], check=True, capture_output=True, text=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    config = {}
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("platform-config"):
            config = d.get("data", {})
    for name in config:
        if not is_documented(name, documented):
            fail(overlay, f"ConfigMap sets undocumented variable {name}")
    shutdown = seconds(config.get("PLATFORM_SHUTDOWN_TIMEOUT", "30s"))

    pod_ports = {}
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        name = d["metadata"]["name"]
        spec = d["spec"]["template"]["spec"]
        container = spec["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        pod_ports[name] = ports
        where = f"{overlay.name}/{name}"
        if not container.get("image"):
            fail(where, "container has no image")
        for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
            get = container.get(probe, {}).get("httpGet", {})
            if get.get("path") != path:
                fail(where, f"{probe} must GET {path}, not {get.get('path')}")
            if get.get("port") not in ports:
                fail(where, f"{probe} port {get.get('port')} is not a declared container port")
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if shutdown is not None and grace <= shutdown + pre_stop:
            fail(where, f"terminationGracePeriodSeconds {grace} must exceed drain {shutdown}s + preStop {pre_stop}s")
        for env in container.get("env", []):
            if not is_documented(env["name"], documented):
                fail(where, f"sets undocumented variable {env['name']}")
        scrape = d["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/port")
        if scrape is not None and int(scrape) != ports.get("admin"):
            fail(where, f"Prometheus scrapes port {scrape}, not the admin port {ports.get('admin')}")
        http = ports.get("http")
        addr = next((e.get("value") for e in container.get("env", []) if e["name"].endswith("_HTTP_ADDR")), None)
        if addr is None or not addr.endswith(f":{http}"):
            fail(where, f"HTTP_ADDR {addr} does not match container port {http}")

    for d in docs:
        if d["kind"] != "Service":
            continue
        name = d["metadata"]["name"]
        for port in d["spec"]["ports"]:
            if port["targetPort"] not in pod_ports.get(name, {}):
                fail(f"{overlay.name}/service/{name}", f"targetPort {port['targetPort']} not declared by the pods")

    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for entry in filter(None, config.get("PLATFORM_STATIC_SERVICES", "").split(",")):
        service, _, addr = entry.strip().partition("=")
        host, _, ports = addr.partition(":")
        http, _, grpc = ports.partition("/")
        target = services.get(host)
        if target is None:
            fail(overlay, f"static discovery names unknown Service {host}")
            continue
        declared = {p["port"] for p in target["spec"]["ports"]}
        for port in filter(None, (http, grpc)):
            if int(port) not in declared:
                fail(overlay, f"static discovery uses {host}:{port}, which the Service does not expose")


def check_compose(documented):
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        if isinstance(env, dict):
            for var in env:
                if var.startswith(("PLATFORM_", "USERS_", "CHAT_", "NOTIFICATIONS_", "SEARCH_", "STORAGE_", "GATEWAY_")) and not is_documented(var, documented):
                    fail(f"compose/{name}", f"sets undocumented variable {var}")


def main():
    if shutil.which("kubectl") is None:
        print("kubectl is required to render the kustomize overlays", file=sys.stderr)
        return 1
    documented = documented_variables()
    overlays = sorted((ROOT / "k8s" / "overlays").iterdir())
    for overlay in overlays:
        check_overlay(overlay, documented)
    check_compose(documented)
    for error in errors:
        print(f"k8s check: {error}", file=sys.stderr)
    if not errors:
        print(f"k8s check: {len(overlays)} overlays and the compose file agree with the code")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
