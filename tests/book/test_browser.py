"""The built book, opened page by page in a real browser, offline.

A static check of the HTML cannot see what a reader sees: an image that is
in the page but fails to decode, math that MathJax never typeset, a link
that points at a missing anchor, a script that throws, a table wider than
its column. These tests serve ``_build/html`` on 127.0.0.1 (a free port),
open every page of ``_toc.yml`` in headless Chromium (Debian's ``chromium``,
installed by ``make browser``, which ``make test`` runs first) and fail if,
on any page:

* an ``<img>`` did not load (``naturalWidth`` 0);
* TeX is left in the text (``$$``, ``\\(``, ``\\[``, ``\\begin{`` ...), math
  was not typeset into ``mjx-container`` elements, or MathJax reported an
  error;
* an internal link or cross-reference points at a file or an anchor id that
  does not exist, or Sphinx left a reference unresolved;
* the page logged a JavaScript error or an error to the console, a request
  failed, or it asked any host other than the local server for anything;
* at 1280 px the page scrolls sideways, or a code cell, an output or a table
  is wider than the column it sits in (it would need its own scroll bar).

Each page is saved as a full-page screenshot, 1280 px wide, under
``_build/screenshots/``.

Chromium is driven by Playwright (pinned in requirements.txt) launched on
the system's ``/usr/bin/chromium`` (``executable_path``), so no browser is
downloaded; README.md records the two versions that work together. Two more
checks need no browser: the built HTML loads no script, style, font or image
from another host (MathJax is bundled by the sphinx-mathjax-offline package),
and every chapter page links the notebook it was built from for download.

`make test` builds the book first; running pytest alone needs `make book`
and `make browser`.
"""

from __future__ import annotations

import functools
import os
import re
import threading
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
# no sandbox (we run as root). Playwright adds --headless and its own profile.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
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
    pageWidth: document.documentElement.scrollWidth,
    viewportWidth: window.innerWidth,
    // code cells, outputs and tables wider than their box or than the column (main) they sit in
    tooWide: [...main.querySelectorAll('pre, table, div.cell_output, div.highlight, .output')]
      .filter(e => e.offsetParent !== null)
      .map(e => {
        const r = e.getBoundingClientRect(), col = main.getBoundingClientRect();
        const over = Math.max(e.scrollWidth - e.clientWidth, Math.ceil(r.right - col.right));
        return {tag: e.tagName.toLowerCase() + (e.className ? '.' + String(e.className).split(' ')[0] : ''),
                over, text: (e.textContent || '').trim().slice(0, 60)};
      })
      .filter(x => x.over > 1),
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
    links = re.findall(r'href="([^"]*_sources/[^"]*' + re.escape(name) + r')"', text)
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
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is pinned in requirements.txt")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS), timeout=60_000)
        yield b
        b.close()


def visit(browser, url: str, shot: Path) -> tuple[dict, list[str]]:
    """Open ``url`` in a fresh page; return the page's report and what went wrong while loading."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    problems: list[str] = []
    context = browser.new_context(viewport={"width": WIDTH, "height": 900}, device_scale_factor=1)
    page = context.new_page()

    def on_request(route):
        req_url = route.request.url
        if urlsplit(req_url).scheme in ("http", "https", "ws", "wss") and not req_url.startswith(
            origin + "/"
        ):
            problems.append(f"request to another host: {req_url}")
            route.abort()
        else:
            route.continue_()

    def on_console(msg):
        if msg.type in ("error", "assert") and AUTO_FAVICON not in (msg.location or {}).get("url", ""):
            problems.append(f"console.{msg.type}: {msg.text}")

    def on_failed(req):  # requests to other hosts are aborted above and reported there
        if AUTO_FAVICON not in req.url and req.url.startswith(origin + "/"):
            problems.append(f"request failed: {req.failure} ({req.resource_type}) {req.url}")

    def on_response(resp):
        if resp.status >= 400 and AUTO_FAVICON not in resp.url:
            problems.append(f"HTTP {resp.status}: {resp.url}")

    context.route("**/*", on_request)
    page.on("pageerror", lambda exc: problems.append(f"JavaScript error: {exc}"))
    page.on("console", on_console)
    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    try:
        try:
            page.goto(url, wait_until="load", timeout=PAGE_TIMEOUT * 1000)
        except Exception as exc:  # noqa: BLE001 - a navigation error is a finding, not a crash
            return {}, [f"navigation failed: {exc}"]
        report = page.evaluate(PAGE_REPORT_JS)
        page.evaluate("document.fonts.ready.then(() => 1)")
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True, timeout=60_000)
        page.wait_for_timeout(200)  # let late console messages and failed requests arrive
        return report, problems
    finally:
        context.close()


AUTO_FAVICON = "/favicon.ico"


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


def page_problems(browser, server: LocalServer, html_dir: Path, rel: str, shot: Path) -> list[str]:
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
        if report["pageWidth"] > report["viewportWidth"] + 1:
            problems.append(f"the page scrolls sideways: {report['pageWidth']} px wide at {WIDTH} px")
        problems += [
            f"too wide for its column by {w['over']} px: {w['tag']} ({w['text']!r})"
            for w in report["tooWide"]
        ]
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
<pre id="wide" style="width: 300px; overflow-x: auto">WIDE_LINE</pre>
</main></body></html>
"""


def test_checker_catches_a_broken_page(browser, tmp_path):
    """The checks above find each kind of fault on a page made to have all of them."""
    page = BROKEN_PAGE.replace("WIDE_LINE", "a code line far wider than its 300 px box " * 10)
    (tmp_path / "broken.html").write_text(page, encoding="utf-8")
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
        "too wide": "too wide for its column",
    }
    missed = [name for name, needle in expected.items() if needle not in problems]
    assert not missed, f"the browser check missed {missed}; it reported:\n{problems}"
    assert "link #here" not in problems, problems
