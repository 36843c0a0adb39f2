"""A headless Firefox driven over WebDriver BiDi, the remote protocol built into Firefox (no geckodriver, nothing
downloaded): enough of it for the explorer's tests (navigate, evaluate, real pointer and key input, console log).

playwright's Python package cannot drive a stock Firefox (its Firefox is a patched build it would download), so this
speaks the W3C protocol directly over the `websockets` library.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from typing import Any

from websockets.sync.client import connect

PREFS = {  # a quiet, offline-friendly profile: no first-run pages, updates or telemetry reaching for the network
    "browser.shell.checkDefaultBrowser": False, "browser.startup.homepage_override.mstone": "ignore",
    "app.update.disabledForTesting": True, "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False, "network.captive-portal-service.enabled": False,
    "browser.safebrowsing.update.enabled": False, "extensions.update.enabled": False,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Firefox:
    def __init__(self, exe: str, width: int = 1200, height: int = 1000, timeout: float = 120) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="vitkit-firefox-")
        with open(os.path.join(self._profile.name, "user.js"), "w") as f:
            f.writelines(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in PREFS.items())
        port = _free_port()
        self._proc = subprocess.Popen(
            [exe, "--headless", "--no-remote", "--profile", self._profile.name, "--remote-debugging-port", str(port),
             f"--width={width}", f"--height={height}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "MOZ_HEADLESS": "1"})
        deadline, lines = time.monotonic() + timeout, []
        assert self._proc.stderr is not None
        while time.monotonic() < deadline:  # Firefox says when its BiDi server listens
            line = self._proc.stderr.readline()
            if not line and self._proc.poll() is not None:
                raise RuntimeError("Firefox exited: " + "".join(lines[-20:]))
            lines.append(line)
            if re.search(r"WebDriver BiDi listening on ws://", line):
                break
        else:
            self.close()
            raise RuntimeError("Firefox did not start its WebDriver BiDi server: " + "".join(lines[-20:]))
        # Keep reading Firefox's stderr: a full pipe would block the browser mid-test.
        threading.Thread(target=lambda: deque(iter(self._proc.stderr.readline, ""), maxlen=0), daemon=True).start()
        self._id, self.log = 0, []
        try:  # a failure here must not leave the browser running
            self._ws = connect(f"ws://127.0.0.1:{port}/session", max_size=None, open_timeout=timeout)
            self.send("session.new", {"capabilities": {}})
            self.send("session.subscribe", {"events": ["log.entryAdded"]})
            self.context = self.send("browsingContext.getTree", {})["contexts"][0]["context"]
        except BaseException:
            self.close()
            raise

    def send(self, method: str, params: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv(timeout=timeout))
            if msg.get("type") == "event":
                if msg["method"] == "log.entryAdded":
                    self.log.append(msg["params"])
            elif msg.get("id") == self._id:
                if msg.get("type") == "error":
                    raise RuntimeError(f"{method}: {msg.get('error')}: {msg.get('message')}")
                return msg["result"]

    def goto(self, url: str) -> None:
        self.send("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (JSON-able results only: wrap others in JSON.stringify)."""
        res = self.send("script.evaluate", {"expression": expression, "target": {"context": self.context},
                                            "awaitPromise": True})
        if res["type"] == "exception":
            raise RuntimeError(f"{expression}: {res['exceptionDetails']['text']}")
        return _value(res["result"])

    def wait_for(self, expression: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.eval(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(expression)
            time.sleep(0.05)

    def click(self, x: float, y: float) -> None:
        """A real pointer click at viewport coordinates."""
        self.send("input.performActions", {"context": self.context, "actions": [{
            "type": "pointer", "id": "mouse", "actions": [
                {"type": "pointerMove", "x": round(x), "y": round(y)},
                {"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0}]}]})

    def press(self, key: str) -> None:
        self.send("input.performActions", {"context": self.context, "actions": [{
            "type": "key", "id": "keyboard", "actions": [{"type": "keyDown", "value": key},
                                                         {"type": "keyUp", "value": key}]}]})

    def screenshot(self, box: dict[str, float]) -> bytes:
        """PNG of the viewport area ``box`` (x, y, width, height, as getBoundingClientRect gives them)."""
        import base64

        clip = {"type": "box", **{k: box[k] for k in ("x", "y", "width", "height")}}
        res = self.send("browsingContext.captureScreenshot", {"context": self.context, "clip": clip})
        return base64.b64decode(res["data"])

    def errors(self) -> list[str]:
        return [e.get("text", "") for e in self.log if e.get("level") in ("error", "warn")]

    def close(self) -> None:
        try:
            if hasattr(self, "_ws"):
                self._ws.close()
        finally:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._profile.cleanup()


def _value(v: dict[str, Any]) -> Any:
    """A BiDi remote value -> Python (primitives, arrays and plain objects)."""
    t = v["type"]
    if t in ("undefined", "null"):
        return None
    if t == "array":
        return [_value(x) for x in v["value"]]
    if t == "object":
        return {k if isinstance(k, str) else _value(k): _value(x) for k, x in v["value"]}
    return v.get("value")
