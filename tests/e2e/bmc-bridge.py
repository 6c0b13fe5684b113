#!/usr/bin/python3
# A machine behind a Redfish BMC, for tests/e2e_fleet.rs: sushy-tools' emulator (fake driver)
# sends its external notifier the system's whole state after each change; this bridge is that
# notifier, and maps the state onto one QEMU machine through QEMU's monitor (QMP):
#   - BootSourceOverrideTarget (the notification's boot_device) -> the devices' bootindex
#     (qom-set), which QEMU hands the firmware (fw_cfg bootorder) at the next reset;
#   - power_state On -> system_reset and cont; Off -> stop.
# QEMU is started here at once, paused (-S) and so "off", with -no-shutdown: a guest that powers
# off stops and can be powered on again. The test never starts, stops or resets that QEMU itself.
#
# Usage: bmc-bridge.py CONFIG.json, with CONFIG: {"listen": [ADDR, PORT], "qmp": SOCKET,
# "qemu": [ARGV...], "log": FILE, "network_first": {DEVICE: INDEX}, "disk_first": {DEVICE: INDEX}}.
import http.server
import json
import socket
import subprocess
import sys
import threading
import time

config = json.load(open(sys.argv[1]))
log_file = open(config["log"], "a", buffering=1)


def log(text):
    log_file.write("%.3f %s\n" % (time.time(), text))


class Monitor:
    """QMP over a unix socket: one command at a time, each answer read back."""

    def __init__(self, path):
        for _ in range(200):
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit("QEMU's monitor socket %s never came up" % path)
        self.file = self.sock.makefile("rw", buffering=1)
        self.file.readline()  # the greeting
        self.execute("qmp_capabilities")

    def execute(self, command, **arguments):
        message = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.file.write(json.dumps(message) + "\n")
        while True:
            answer = json.loads(self.file.readline())
            if "event" in answer:
                log("event %s" % answer["event"])
                continue
            log("qmp %s %s -> %s" % (command, json.dumps(arguments), json.dumps(answer)))
            return answer


qemu = subprocess.Popen(config["qemu"] + ["-S", "-no-shutdown", "-qmp", "unix:%s,server=on,wait=off" % config["qmp"]])
monitor = Monitor(config["qmp"])
lock = threading.Lock()
state = {"power": "Off", "boot": None}


def boot_order(boot_device):
    order = config["network_first"] if boot_device == "Pxe" else config["disk_first"]
    # Two devices may not hold one index at once: move them all out of the way first.
    for i, device in enumerate(order):
        monitor.execute("qom-set", path="/machine/peripheral/%s" % device, property="bootindex", value=100 + i)
    for device, index in order.items():
        monitor.execute("qom-set", path="/machine/peripheral/%s" % device, property="bootindex", value=index)


def apply(system):
    with lock:
        boot = system.get("boot_device")
        if boot != state["boot"]:
            boot_order(boot)
            state["boot"] = boot
        power = system.get("power_state")
        if power == "On" and state["power"] != "On":
            monitor.execute("system_reset")
            monitor.execute("cont")
        elif power == "Off" and state["power"] != "Off":
            monitor.execute("stop")
        state["power"] = power


class Notifier(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        system = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        log("notified power_state=%s boot_device=%s pending=%s" % (system.get("power_state"), system.get("boot_device"), json.dumps(system.get("pending_power"))))
        apply(system)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


boot_order(None)
log("QEMU %d paused (off), disk first" % qemu.pid)
http.server.ThreadingHTTPServer(tuple(config["listen"]), Notifier).serve_forever()
