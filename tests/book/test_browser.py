"""The built book, opened page by page in a real browser, offline.

A static check of the HTML cannot see what a reader sees: an image that is
in the page but fails to decode, math that MathJax never typeset, a link
that points at a missing anchor, a script that throws. These tests serve
``_build/html`` on 127.0.0.1 (a free port), open every page of ``_toc.yml``
in headless Chromium (Debian's ``chromium``, installed by ``make browser``,
which ``make test`` runs first) and fail if, on any page:

* an ``<img>`` did not load (``naturalWidth`` 0);
* TeX is left in the text (``$$``, ``\\(``, ``\\[``, ``\\begin{`` ...), math
  was not typeset into ``mjx-container`` elements, or MathJax reported an
  error;
* an internal link or cross-reference points at a file or an anchor id that
  does not exist, or Sphinx left a reference unresolved;
* the page logged a JavaScript error or an error to the console, a request
  failed, or it asked any host other than the local server for anything.

Each page is saved as a full-page screenshot, 1280 px wide, under
``_build/screenshots/``.

Chromium is driven over the Chrome DevTools Protocol with ``websocket-client``
(pinned in requirements.txt): no driver binary, nothing downloaded. Two more
checks need no browser: the built HTML loads no script, style, font or image
from another host (MathJax is bundled by the sphinx-mathjax-offline package),
and every chapter page links the notebook it was built from for download.

`make test` builds the book first; running pytest alone needs `make book`
and `make browser`.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from booktoc import toc_docs

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WIDTH = 1280
PAGE_TIMEOUT = 30.0  # seconds for one page to load, typeset and settle
MAX_SHOT_HEIGHT = 30000  # px; Chromium cannot capture much taller surfaces

# Flags for a closed network (see the machine notes): no background traffic,
# a throw-away profile, no sandbox (we run as root).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    f"--window-size={WIDTH},900",
    "--remote-debugging-port=0",
)

# Text that must not survive typesetting (outside code). The last pattern is
# inline math whose dollars were not parsed: "$...\command...$".
RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\\end\{|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$")

# What the page reports about itself once it has loaded (run in the page).
PAGE_REPORT_JS = r"""
(async () => {
  const imgs = [...document.images];
  await Promise.all(imgs.map(i => i.complete ? null :
      new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  await document.fonts.ready;
  const main = document.querySelector('main') || document.body;
  const clone = main.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, mjx-assistive-mml, .highlight, textarea')
       .forEach(e => e.remove());
  const math = [...main.querySelectorAll('.math')];
  return {
    title: document.title,
    brokenImages: imgs.filter(i => !(i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    nImages: imgs.length,
    text: clone.textContent,
    nMath: math.length,
    untypesetMath: math.filter(m => !m.querySelector('mjx-container'))
                       .map(m => m.textContent.trim().slice(0, 80)),
    mathErrors: [...main.querySelectorAll('mjx-merror, [data-mjx-error]')]
                   .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 80)),
    mathJaxLoaded: !!(window.MathJax && MathJax.version),
    links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
    unresolvedRefs: [...main.querySelectorAll('.xref')].filter(x => !x.closest('a'))
                       .map(x => x.textContent.trim().slice(0, 80)),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    height: Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)),
  };
})()
"""


# --- which pages --------------------------------------------------------------

DOCS = toc_docs()


def source_of(doc: str) -> Path | None:
    for suffix in (".ipynb", ".md"):
        if (ROOT / f"{doc}{suffix}").is_file():
            return ROOT / f"{doc}{suffix}"
    return None


# --- static checks of the built HTML -----------------------------------------


class _Collector(HTMLParser):
    """ids of a page, and the URLs it makes the browser fetch."""

    FETCHED = {  # tag -> attributes whose URL the browser loads by itself
        "script": ("src",),
        "img": ("src", "srcset"),
        "iframe": ("src",),
        "source": ("src", "srcset"),
        "video": ("src", "poster"),
        "audio": ("src",),
        "embed": ("src",),
        "object": ("data",),
        "input": ("src",),
    }

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.fetched: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.ids.add(a[key])
        for key in self.FETCHED.get(tag, ()):
            if a.get(key):
                self.fetched.extend(part.strip().split(" ")[0] for part in a[key].split(","))
        if tag == "link" and a.get("href"):
            rel = (a.get("rel") or "").lower()
            if any(
                r in rel for r in ("stylesheet", "preload", "icon", "modulepreload", "prefetch", "manifest")
            ):
                self.fetched.append(a["href"])


@functools.cache
def parse_page(path: Path) -> _Collector:
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8", errors="replace"))
    return collector


def is_remote(url: str) -> bool:
    parts = urlsplit(url.strip())
    return bool(parts.netloc) or parts.scheme in ("http", "https", "ws", "wss", "ftp")


CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""")


def test_built_html_fetches_nothing_from_other_hosts(html_dir):
    """No script, stylesheet, font, image or frame comes from the network."""
    remote = []
    for page in sorted(html_dir.rglob("*.html")):
        for url in parse_page(page).fetched:
            if is_remote(url):
                remote.append(f"{page.relative_to(html_dir)}: {url}")
    for css in sorted(html_dir.rglob("*.css")):
        for url in CSS_URL.findall(css.read_text(encoding="utf-8", errors="replace")):
            if is_remote(url):
                remote.append(f"{css.relative_to(html_dir)}: {url}")
    assert not remote, "the built book loads these from other hosts (it must work offline):\n" + "\n".join(
        remote
    )


def test_mathjax_is_bundled(html_dir):
    """Pages with math load MathJax 3 from _static, and the file and its fonts are there."""
    pages = [html_dir / f"{doc}.html" for doc in DOCS if (html_dir / f"{doc}.html").is_file()]
    with_math = [p for p in pages if 'class="math' in p.read_text(encoding="utf-8")]
    for page in with_math:
        scripts = [u for u in parse_page(page).fetched if "mathjax" in u.lower()]
        assert scripts, f"{page.name} has math but loads no MathJax script"
        for url in scripts:
            assert not is_remote(url), f"{page.name} loads MathJax from {url}"
            target = (page.parent / unquote(urlsplit(url).path)).resolve()
            assert target.is_file(), f"{page.name} loads {url}, which the build did not write"
    fonts = list((html_dir / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))
    assert fonts, "MathJax's CHTML fonts are not in _static/mathjax (is sphinx-mathjax-offline loaded?)"


@pytest.mark.parametrize("doc", [d for d in DOCS if str(source_of(d)).endswith(".ipynb")])
def test_chapter_offers_its_notebook_for_download(html_dir, doc):
    """The page's download button links the committed .ipynb, byte for byte."""
    page = html_dir / f"{doc}.html"
    assert page.is_file(), f"no page {page.relative_to(ROOT)}"
    text = page.read_text(encoding="utf-8")
    name = Path(doc).name + ".ipynb"
    links = re.findall(r'href="([^"]*_sources/[^"]*%s)"' % re.escape(name), text)
    assert links, (
        f"{page.name} has no download link to _sources/.../{name} (html_theme_options.use_download_button)"
    )
    target = (page.parent / unquote(links[0])).resolve()
    assert target.is_file(), f"{page.name} links {links[0]}, which the build did not write"
    assert target.read_bytes() == (ROOT / f"{doc}.ipynb").read_bytes(), (
        f"{target.relative_to(ROOT)} differs from {doc}.ipynb: was the book rebuilt?"
    )


# --- the browser --------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    misses: list[str]

    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        pass

    def send_error(self, code, message=None, explain=None):
        self.misses.append(f"{code} {self.path}")
        super().send_error(code, message, explain)


class LocalServer:
    """_build/html on 127.0.0.1 at a free port, in a background thread."""

    def __init__(self, root: Path):
        misses: list[str] = []
        handler = functools.partial(
            type("Handler", (_QuietHandler,), {"misses": misses}), directory=str(root)
        )
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.misses = misses
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class CDPError(RuntimeError):
    pass


class Browser:
    """Headless Chromium and one DevTools websocket to it."""

    def __init__(self, executable: str = CHROMIUM):
        import websocket  # websocket-client

        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.log = open(Path(self.profile) / "chromium.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise CDPError(f"Chromium did not start (exit {self.proc.returncode}): {self.output()}")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}{path}",
            timeout=PAGE_TIMEOUT,
            suppress_origin=True,
            enable_multithread=False,
        )
        self.next_id = 0
        self.events: list[dict] = []

    def output(self) -> str:
        self.log.flush()
        return (Path(self.profile) / "chromium.log").read_text(errors="replace")[-2000:]

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = PAGE_TIMEOUT,
    ) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(deadline, method)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, event: str, session: str, timeout: float = PAGE_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        for i, e in enumerate(self.events):
            if e["method"] == event and e.get("sessionId") == session:
                return self.events[i]
        while True:
            reply = self._recv(deadline, event)
            if "method" in reply:
                self.events.append(reply)
                if reply["method"] == event and reply.get("sessionId") == session:
                    return reply

    def _recv(self, deadline: float, what: str) -> dict:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CDPError(f"timed out waiting for {what}")
        self.ws.settimeout(left)
        try:
            return json.loads(self.ws.recv())
        except Exception as exc:  # websocket timeout or closed connection
            raise CDPError(f"no answer while waiting for {what}: {exc!r}") from exc

    def close(self):
        try:
            if getattr(self, "ws", None):
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.log.close()
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server(html_dir):
    srv = LocalServer(html_dir)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} not found: run `make browser` (Debian's chromium; `make test` does it for you)"
        )
    pytest.importorskip("websocket", reason="websocket-client is pinned in requirements.txt; run `make venv`")
    b = Browser()
    yield b
    b.close()


def visit(browser: Browser, url: str, shot: Path) -> tuple[dict, list[str]]:
    """Open ``url`` in a fresh tab; return the page's report and what went wrong while loading."""
    browser.events.clear()
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        nav = browser.send("Page.navigate", {"url": url}, session=session)
        if nav.get("errorText"):
            return {}, [f"navigation failed: {nav['errorText']}"]
        browser.wait_for("Page.loadEventFired", session)
        result = browser.send(
            "Runtime.evaluate",
            {"expression": PAGE_REPORT_JS, "awaitPromise": True, "returnByValue": True},
            session=session,
        )
        if "exceptionDetails" in result:
            raise CDPError(f"page report failed: {result['exceptionDetails']}")
        report = result["result"]["value"]
        height = min(max(int(report["height"]), 900), MAX_SHOT_HEIGHT)
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        browser.send(
            "Runtime.evaluate",
            {"expression": "document.fonts.ready.then(() => 1)", "awaitPromise": True},
            session=session,
        )
        png = browser.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "fromSurface": True},
            session=session,
            timeout=60,
        )
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.write_bytes(base64.b64decode(png["data"]))
        # Let late console messages and failed requests arrive.
        browser.send(
            "Runtime.evaluate",
            {"expression": "new Promise(r => setTimeout(() => r(1), 200))", "awaitPromise": True},
            session=session,
        )
        return report, load_problems(browser.events, session, url)
    finally:
        browser.send("Target.closeTarget", {"targetId": target})


AUTO_FAVICON = "/favicon.ico"


def load_problems(events: list[dict], session: str, page_url: str) -> list[str]:
    """JavaScript errors, console errors, failed or off-machine requests of one page."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(page_url))
    problems = []
    for e in events:
        if e.get("sessionId") != session:
            continue
        method, p = e["method"], e.get("params", {})
        if AUTO_FAVICON in json.dumps(p):
            continue  # the browser asks for /favicon.ico by itself; the book declares none
        if method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            desc = (d.get("exception") or {}).get("description") or d.get("text")
            problems.append(f"JavaScript error: {desc} ({d.get('url', '')}:{d.get('lineNumber')})")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            problems.append(f"console.{p['type']}: {args}")
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            entry = p["entry"]
            problems.append(
                f"console ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".rstrip()
            )
        elif method == "Network.requestWillBeSent":
            req_url = p["request"]["url"]
            if urlsplit(req_url).scheme in ("http", "https", "ws", "wss") and not req_url.startswith(
                origin + "/"
            ):
                problems.append(f"request to another host: {req_url}")
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            problems.append(f"request failed: {p.get('errorText')} ({p.get('type')})")
        elif method == "Network.responseReceived" and p["response"].get("status", 200) >= 400:
            problems.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
    return problems


def link_problems(report: dict, page: Path, page_url: str, html_dir: Path, base: str) -> list[str]:
    """Internal links whose file or anchor does not exist."""
    problems = []
    own_ids = set(report["ids"])
    for href in report["links"]:
        href = href.strip()
        parts = urlsplit(href)
        if parts.scheme in ("mailto", "javascript", "data", "tel"):
            continue
        if href.startswith("#"):
            frag = unquote(parts.fragment)
            if frag and frag not in own_ids:
                problems.append(f"link {href}: no element with id {frag!r} on this page")
            continue
        absolute = urljoin(page_url, href)
        if not absolute.startswith(base):
            continue  # a link to another site: not checked offline
        path = unquote(urlsplit(absolute).path)[len(urlsplit(base).path) :]
        target = html_dir / path
        if path == "" or path.endswith("/"):
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"link {href}: {target.relative_to(html_dir)} does not exist")
            continue
        frag = unquote(parts.fragment)
        if frag and target.suffix == ".html":
            ids = own_ids if target.resolve() == page.resolve() else parse_page(target.resolve()).ids
            if frag not in ids:
                problems.append(f"link {href}: {target.relative_to(html_dir)} has no id {frag!r}")
    return problems


def page_problems(browser: Browser, server: LocalServer, html_dir: Path, rel: str, shot: Path) -> list[str]:
    """Everything wrong with page ``rel`` (relative to ``html_dir``) as Chromium shows it."""
    page = html_dir / rel
    url = server.base + rel
    del server.misses[:]
    report, problems = visit(browser, url, shot)
    problems += [f"local server answered {m}" for m in server.misses if not m.endswith(" " + AUTO_FAVICON)]
    if report:
        problems += [f"image did not load: {src}" for src in report["brokenImages"]]
        for m in RAW_TEX.finditer(report["text"]):
            around = report["text"][max(0, m.start() - 40) : m.end() + 40].replace("\n", " ")
            problems.append(f"raw TeX in the text: ...{around}...")
        if report["nMath"] and not report["mathJaxLoaded"]:
            problems.append(f"{report['nMath']} math elements but MathJax did not load")
        problems += [f"math not typeset: {t}" for t in report["untypesetMath"]]
        problems += [f"MathJax error: {t}" for t in report["mathErrors"]]
        problems += [f"unresolved reference: {t}" for t in report["unresolvedRefs"]]
        problems += link_problems(report, page, url, html_dir, server.base)
    return problems


@pytest.mark.parametrize("doc", DOCS)
def test_chapter_renders_in_browser(html_dir, server, browser, doc):
    page = html_dir / f"{doc}.html"
    assert page.is_file(), f"{doc} is in _toc.yml but the build wrote no {page.relative_to(ROOT)}"
    shot = SHOTS / f"{doc}.png"
    problems = page_problems(browser, server, html_dir, f"{doc}.html", shot)
    assert shot.is_file() and shot.stat().st_size > 0, f"no screenshot written to {shot}"
    assert not problems, f"{doc} in Chromium ({shot.relative_to(ROOT)}):\n  " + "\n  ".join(problems)


BROKEN_PAGE = r"""<!DOCTYPE html>
<html><head><title>broken</title></head><body><main>
<p id="here">An image that is not there: <img src="missing.png" alt="x"></p>
<p>Untypeset math: <span class="math notranslate nohighlight">\(x^2\)</span> and $$y$$.</p>
<div class="math notranslate nohighlight">\[\begin{aligned} a \end{aligned}\]</div>
<p><a href="gone.html">a missing page</a>, <a href="ok.html#nowhere">a missing anchor</a>,
<a href="#here">a good anchor</a>, <a href="#absent">a bad one</a>,
<span class="xref std std-ref">some-label</span>.</p>
<script>console.error("logged error");</script>
<script>throw new Error("thrown error");</script>
<script src="https://cdn.invalid/x.js"></script>
</main></body></html>
"""


def test_checker_catches_a_broken_page(browser, tmp_path):
    """The checks above find each kind of fault on a page made to have all of them."""
    (tmp_path / "broken.html").write_text(BROKEN_PAGE, encoding="utf-8")
    (tmp_path / "ok.html").write_text('<html><body><main id="top">ok</main></body></html>', encoding="utf-8")
    srv = LocalServer(tmp_path)
    try:
        problems = "\n".join(page_problems(browser, srv, tmp_path, "broken.html", tmp_path / "broken.png"))
    finally:
        srv.close()
    expected = {
        "missing image": "image did not load: missing.png",
        "raw TeX": "raw TeX in the text",
        "MathJax absent": "math elements but MathJax did not load",
        "untypeset math": "math not typeset",
        "missing page": "link gone.html",
        "missing anchor": "link ok.html#nowhere",
        "bad local anchor": "link #absent",
        "unresolved ref": "unresolved reference: some-label",
        "console error": "logged error",
        "JavaScript error": "thrown error",
        "remote request": "request to another host: https://cdn.invalid/x.js",
        "404": "local server answered 404 /missing.png",
    }
    missed = [name for name, needle in expected.items() if needle not in problems]
    assert not missed, f"the browser check missed {missed}; it reported:\n{problems}"
    assert "link #here" not in problems, problems
