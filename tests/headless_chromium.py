"""Open a local HTML page in headless Chromium, offline, and report what it drew.

Chromium is driven through the Chrome DevTools protocol over a websocket on 127.0.0.1 (the
`websockets` package): that is what lets a test read the page's console errors and failed
requests, inspect every image, canvas and SVG, and take a screenshot. Every host name resolves
to nothing, so a page that needs the network is seen failing even on a machine that has one.
"""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from websockets.sync.client import connect

from flows.processes import stop_process_group

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = "install it with `apt-get install -y chromium` (Debian; .ci/run does this in CI)"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND",   # offline: no host name resolves
         "--remote-debugging-port=0"]
PAGE_WIDTH = 1400  # a laptop screen
TIMEOUT_S = 60

# Runs in the page: every <img>, and every Vega view (`.marks`: the <canvas> or <svg> Vega draws
# into), rasterised and measured. `drawn`: pixels unlike the top-left one; `coloured`: saturated
# pixels (axes and text are grey, so these are the data marks); `shown`: its width on the page in CSS px.
PROBE = """
(async () => {
  async function rasterise(node) {
    if (node instanceof HTMLCanvasElement) return node;
    let image = node;
    if (node instanceof SVGElement) {
      image = new Image();
      image.src = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(new XMLSerializer().serializeToString(node));
      await image.decode();
    }
    const canvas = document.createElement('canvas');
    canvas.width = image.naturalWidth || image.width;
    canvas.height = image.naturalHeight || image.height;
    if (canvas.width && canvas.height) canvas.getContext('2d').drawImage(image, 0, 0);
    return canvas;
  }
  async function measure(node) {
    const canvas = await rasterise(node);
    const result = {tag: node.tagName.toLowerCase(), width: canvas.width, height: canvas.height, drawn: 0, coloured: 0,
                    shown: node.getBoundingClientRect().width};
    if (!canvas.width || !canvas.height) return result;
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 0; i < pixels.length; i += 4) {
      const [r, g, b, a] = [pixels[i], pixels[i + 1], pixels[i + 2], pixels[i + 3]];
      if (r !== pixels[0] || g !== pixels[1] || b !== pixels[2] || a !== pixels[3]) result.drawn++;
      if (a > 0 && Math.max(r, g, b) - Math.min(r, g, b) > 40) result.coloured++;
    }
    return result;
  }
  const plots = {};
  for (const id of PLOT_IDS) {
    const div = document.getElementById(id);
    plots[id] = div ? await Promise.all([...div.querySelectorAll('canvas.marks, svg.marks')].map(measure)) : null;
  }
  const images = await Promise.all([...document.images].map(measure));
  const versions = {vega: window.vega?.version, vegaLite: window.vegaLite?.version, vegaEmbed: window.vegaEmbed?.version};
  return {plots, images, versions, text: document.body ? document.body.innerText : ''};
})()
"""


@dataclass
class RenderedPage:
    """What a page did in the browser: the probe's measurements, errors, requests, a screenshot."""

    plots: dict[str, list[dict] | None]   # per plot div id: the Vega views drawn in it (None: no such div)
    images: list[dict]
    versions: dict[str, str | None]
    text: str = ""                                         # what a reader sees as text (innerText)
    errors: list[str] = field(default_factory=list)        # uncaught exceptions, console.error, failed loads
    remote_requests: list[str] = field(default_factory=list)  # any URL that is not file: or data:
    screenshot: bytes = field(default=b"", repr=False)
    script_result: object = None                           # what `render`'s script returned


class DevToolsPage:
    """One page target of a running Chromium, spoken to over its DevTools websocket."""

    def __init__(self, websocket_url: str):
        self.socket = connect(websocket_url, max_size=None, open_timeout=TIMEOUT_S)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=TIMEOUT_S))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for_event(self, method: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not any(event.get("method") == method for event in self.events):
            self.events.append(json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic()))))

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"probe failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.socket.close()


def start_chromium(profile: Path) -> tuple[subprocess.Popen, str]:
    """Chromium on about:blank with a fresh profile; returns the process and its page's websocket URL."""
    with open(profile / "chromium.log", "wb") as log:  # the child keeps its own copy of the handle
        process = subprocess.Popen([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}",
                                    f"--window-size={PAGE_WIDTH},900", "about:blank"],
                                   stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                   start_new_session=True)  # its helper processes go with it
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + TIMEOUT_S
    while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process_group(process, grace_s=2)
            raise RuntimeError(f"chromium did not start: {(profile / 'chromium.log').read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    port = port_file.read_text().splitlines()[0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT_S) as response:
        targets = json.load(response)
    return process, next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")


def page_errors(events: list[dict]) -> list[str]:
    """Uncaught exceptions, console.error/assert calls and browser-logged errors (failed loads)."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"{params['entry']['text']} {params['entry'].get('url', '')}".strip())
    return errors


def remote_requests(events: list[dict]) -> list[str]:
    urls = (event["params"]["request"]["url"] for event in events if event.get("method") == "Network.requestWillBeSent")
    return [url for url in urls if not url.startswith(("file:", "data:", "about:"))]


def measure_when_drawn(page: DevToolsPage, plot_ids: list[str]) -> dict:
    """Vega draws after load, asynchronously: measure until every plot div holds a view with
    something drawn in it, or it is clear that nothing will be (vega-embed never loaded), or time out."""
    probe = PROBE.replace("PLOT_IDS", json.dumps(plot_ids))
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        measured = page.evaluate(probe)
        vega_missing = plot_ids and not measured["versions"].get("vegaEmbed")
        drawn = all(views and all(view["drawn"] for view in views) for views in measured["plots"].values())
        if vega_missing or drawn or time.monotonic() > deadline:
            return measured
        time.sleep(0.2)


def screenshot(page: DevToolsPage) -> bytes:
    """A PNG of the whole page, as tall as its content."""
    height = page.evaluate("Math.ceil(document.documentElement.scrollHeight)")
    page.call("Emulation.setDeviceMetricsOverride", width=PAGE_WIDTH, height=min(height, 16000),
              deviceScaleFactor=1, mobile=False)
    return base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])


def render(html: Path, plot_ids: list[str] = (), script: str | None = None) -> RenderedPage:
    """Open `html` offline in headless Chromium, wait for the plots `plot_ids` to draw, and measure; then
    take the screenshot and run `script` (a JavaScript expression, awaited: a page's own behaviour to try)."""
    with tempfile.TemporaryDirectory(prefix="dnnlab-chromium-", ignore_cleanup_errors=True) as profile:
        process, websocket_url = start_chromium(Path(profile))
        try:
            page = DevToolsPage(websocket_url)
            for domain in ("Page", "Runtime", "Log", "Network"):
                page.call(f"{domain}.enable")
            page.call("Page.navigate", url=html.resolve().as_uri())
            page.wait_for_event("Page.loadEventFired")
            measured = measure_when_drawn(page, list(plot_ids))
            shot = screenshot(page)
            script_result = page.evaluate(script) if script else None
            page.close()
        finally:
            stop_process_group(process)
    return RenderedPage(plots=measured["plots"], images=measured["images"], versions=measured["versions"],
                        text=measured["text"], errors=page_errors(page.events), remote_requests=remote_requests(page.events),
                        screenshot=shot, script_result=script_result)
