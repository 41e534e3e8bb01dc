"""The dashboard server: a read-only JSON API over the run store and the single-page interface.

``create_app(home, token=None, ...)`` builds the FastAPI app; ``lmdev ui`` serves it with uvicorn.

Security (docs/commands/ui.md): only GET and HEAD; a Host-header allowlist (DNS rebinding);
no CORS headers at all; a strict Content-Security-Policy (no inline script), frame denial and
nosniff on every answer; with a token, every request needs it (``?token=`` once, then an
HttpOnly SameSite=Strict cookie, or ``Authorization: Bearer``), compared in constant time;
run files are served only from inside the run's folder in the store.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.staticfiles import StaticFiles

from lmdev.errors import LmdevError
from lmdev.names import InvalidName, run_path
from lmdev.track.query import Query as StoreQuery
from lmdev.track.query import COMPRESS_TAG, Series, fork_step, live_status
from lmdev.track.store import MAX_LIMIT, DamagedRun
from lmdev.track.types import RunInfo
from lmdev.ui import data as D
from lmdev.ui.downsample import DEFAULT_POINTS, MAX_POINTS, series
from lmdev.ui.guard import LoginThrottle, StreamGate, cookie_name, safe_redirect_path

STATIC = Path(__file__).parent / "static"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
OUTPUT_FILES = ("stdout.log", "stderr.log", "output.log")
OUTPUT_TAIL_BYTES = 64 * 1024
MAX_COMPARE = 50
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}  # never SVG (it can hold script)
MAX_COMPARE_KEYS = 12
MAX_ANCESTORS = 16
MAX_EXPLANATIONS = 50  # stored explanations one run's Explanations tab lists
MAX_EXPLANATION_BYTES = 4 << 20  # a larger explain/*.json is skipped, not read


STREAM_CHECK_S = 0.5  # how often a live stream looks for news
STREAM_MAX_S = 3600.0  # a stream's longest life (EventSource reconnects by itself)


def is_loopback_name(host: str) -> bool:
    """Only these hosts may be served without a token (127.0.0.2 and the like need one)."""
    return host.strip("[]").lower() in LOOPBACK_NAMES


def _host_only(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:6006
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def default_allowed_hosts(bind: str) -> set[str]:
    hosts = {"127.0.0.1", "localhost", "::1", bind.strip("[]").lower()}
    if bind in ("0.0.0.0", "::"):  # every address of this machine, and its name
        import socket

        import psutil

        hosts.add(socket.gethostname().lower())
        hosts.add(socket.getfqdn().lower())
        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    hosts.add(a.address.split("%")[0].lower())
    return hosts


def _error(status: int, message: str, hint: str | None = None, kind: str = "error") -> JSONResponse:
    return JSONResponse({"error": {"kind": kind, "message": message, "hint": hint}}, status_code=status)


def _page(status: int, title: str, text: str) -> HTMLResponse:
    from html import escape

    body = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)} - lmdev</title>"
            f"<link rel=stylesheet href=/static/app.css></head><body class=plain><main class=plain-page>"
            f"<h1>{escape(title)}</h1><p>{escape(text)}</p><p><a href=/>Back to the runs</a></p></main></body></html>")
    return HTMLResponse(body, status_code=status)


class _GatedStream(StreamingResponse):
    """A streaming answer that gives its place back (``release``) however the stream ends."""

    def __init__(self, content: Any, release: Any, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def create_app(home: str | os.PathLike[str] | None = None, token: str | None = None, *,
               allowed_hosts: Iterable[str] | None = None, bind: str = "127.0.0.1",
               doctor: Any = None, read_only: bool = False, streams: StreamGate | None = None,
               logins: LoginThrottle | None = None) -> FastAPI:
    """The dashboard app over the store at ``home`` (default: $LMDEV_HOME or ./.lmdev).

    ``token``: when set, every request must carry it. ``allowed_hosts``: the Host header values
    accepted (default: loopback names plus ``bind``). ``doctor``: a function returning the doctor
    report as a dict (default: ``lmdev.diagnose.report.doctor().to_dict()``), for tests.
    ``read_only``: open the store read-only (read-only media). ``streams`` caps the live
    streams, ``logins`` slows failed logins (defaults: ``lmdev.ui.guard``'s).
    """
    from lmdev.track.store import home as store_home

    root = store_home(home).absolute()
    reader = D.Reader(root, read_only=read_only)
    gate = streams if streams is not None else StreamGate()
    throttle = logins if logins is not None else LoginThrottle()
    hosts = {h.lower().strip("[]") for h in (allowed_hosts if allowed_hosts is not None else default_allowed_hosts(bind))}
    token_bytes = token.encode() if token else None
    app = FastAPI(title="lmdev ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.home = root
    app.state.token = token

    def token_ok(given: str | None) -> bool:
        if not given or token_bytes is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token_bytes)

    def cookie_of(request: Request) -> str:
        server = request.scope.get("server")
        return cookie_name(server[1] if server else None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        host = _host_only(request.headers.get("host", ""))
        if host not in hosts:
            resp: Response = _error(400, f"host {host!r} is not allowed",
                                    "open the dashboard with the address `lmdev ui` printed (DNS rebinding guard)",
                                    "host")
        elif request.method not in ("GET", "HEAD"):
            resp = _error(405, f"{request.method} is not allowed: the dashboard is read-only", None, "method")
            resp.headers["Allow"] = "GET, HEAD"
        elif token_bytes is not None and (refused := _login(request)) is not None:
            resp = refused
        elif token_bytes is not None and token_ok(request.query_params.get("token")) \
                and not request.url.path.startswith("/api/"):
            # the token came in the URL: keep it in a cookie and drop it from the address bar;
            # only ever to a path of this dashboard (never //elsewhere or https://elsewhere)
            path = request.scope.get("path", "/")
            target = safe_redirect_path(path)
            query = urllib.parse.urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            resp = RedirectResponse(target + (f"?{query}" if query and target == path else ""), status_code=303)
            _set_cookie(resp, request)
        else:
            if request.method == "HEAD":  # answered as a GET; the server sends no body
                request.scope["method"] = "GET"
            resp = await call_next(request)
            if token_bytes is not None and token_ok(request.query_params.get("token")):
                _set_cookie(resp, request)
        for k, v in SECURITY_HEADERS.items():
            resp.headers[k] = v
        if request.url.path.startswith("/api/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    def _login(request: Request) -> Response | None:
        """None when the request carries the token; else the answer: 401, or 429 while the
        client waits out its back-off after wrong tokens."""
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        given = [t for t in (request.cookies.get(cookie_of(request)), bearer,
                             request.query_params.get("token")) if t]
        client = _client(request)
        wait = throttle.wait_left(client) if given else 0.0
        if wait > 0:
            resp = _error(429, "too many wrong tokens from this address",
                          f"wait {int(wait) + 1} s, then open the URL `lmdev ui` printed", "auth")
            resp.headers["Retry-After"] = str(int(wait) + 1)
            return resp
        if any(token_ok(t) for t in given):
            throttle.succeeded(client)
            return None
        for t in given:
            throttle.failed(client, t)
        if given:  # a wrong token, not a missing one: lmdev secure audit show
            from lmdev.secure import audit

            audit.append("dashboard-token-failure", root, path=request.url.path, client=str(client))
        return _unauthorised(request)

    def _set_cookie(resp: Response, request: Request) -> None:
        resp.set_cookie(cookie_of(request), token or "", httponly=True, samesite="strict", path="/")

    def _unauthorised(request: Request) -> Response:
        if request.url.path.startswith("/api/"):
            return _error(401, "a token is needed", "open the URL with ?token=... that `lmdev ui` printed", "auth")
        return _page(401, "Token needed", "This dashboard needs its token: open the address with ?token=... "
                     "that `lmdev ui` printed when it started.")

    @app.exception_handler(LmdevError)
    async def lmdev_error(request: Request, exc: LmdevError) -> Response:
        if isinstance(exc, DamagedRun):
            status, kind = 422, "damaged"
        elif exc.message.startswith(("no run", "no such")):
            status, kind = 404, "not_found"
        elif isinstance(exc, D.NoStore):
            status, kind = 503, "no_store"
        elif "run store" in exc.message:
            status, kind = 503, "store"
        else:  # bad input (an unknown precision for the planner...)
            status, kind = 400, "bad_request"
        return _error(status, exc.message, exc.hint, kind)

    # -- pages --------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- the API ------------------------------------------------------------------------------

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        try:
            with reader.query() as q:
                n = q.run_count()
            return {"ok": True, "store": str(reader.path), "runs": n, "error": None, "auth": token is not None}
        except LmdevError as exc:
            return {"ok": False, "store": str(reader.path), "runs": 0, "auth": token is not None,
                    "error": {"kind": "no_store" if isinstance(exc, D.NoStore) else "store",
                              "message": exc.message, "hint": exc.hint}}

    @app.get("/api/runs")
    def runs(project: str | None = None, status: str | None = None,
             limit: int | None = Query(None, ge=1, le=MAX_LIMIT)) -> dict[str, Any]:
        with reader.query() as q:
            infos, bad = q.runs(project=project, limit=limit)
            damaged = [{"id": e.run_id, "message": e.message} for e in bad]
            metrics = q.table_metrics()
        rows = []
        for info in infos:
            row = D.run_row(info)
            if status and row["live_status"] != status:
                continue
            row["metrics"] = _canonical_metrics({k: D.key_metric_dict(m) for k, m in metrics.get(info.id, {}).items()})
            row.pop("config", None)  # the Run and Compare pages fetch it; the table does not need it
            row.pop("framework_versions", None)
            row.pop("data_fingerprints", None)
            row.pop("command", None)
            rows.append(row)
        return {"runs": rows, "now": time.time(), "damaged": damaged}

    @app.get("/api/runs/{ref}")
    def run_detail(ref: str) -> dict[str, Any]:
        with reader.query() as q:
            info = q.run(ref)
            summaries = q.summaries(info)
            cursor = q.cursor(info).to_dict()
            system_keys = q.system_keys(info)
            lineage = D.lineage_dict(q.lineage(info))
            media_keys = q.media_keys(info)
        row = D.run_row(info)
        row["summaries"] = [{"key": s.key, "count": s.count, "first_step": s.first_step, "last_step": s.last_step,
                             "last": D.json_float(s.last), "min": D.json_float(s.min), "max": D.json_float(s.max),
                             "nonfinite": s.nonfinite, "higher_is_better": D.higher_is_better(s.key)}
                            for s in summaries]
        row["system_keys"] = system_keys
        row["cursor"] = cursor
        row["lineage"] = lineage
        row["media_keys"] = [{"key": m.key, "kind": m.kind} for m in media_keys]
        folder = _run_folder(info.id)
        row["output_files"] = [n for n in OUTPUT_FILES if folder is not None and (folder / n).is_file()]
        return row

    def state_of(ref: str) -> dict[str, Any]:
        with reader.query() as q:
            info = q.run(ref)
            cursor = q.cursor(info).to_dict()
        return {"id": info.id, "status": info.status, "live_status": live_status(info),
                "heartbeat": info.heartbeat, "end_time": info.end_time, "duration": info.duration,
                "cursor": cursor, "now": time.time()}

    @app.get("/api/runs/{ref}/state")
    def run_state(ref: str) -> dict[str, Any]:
        """Cheap: what a page polls to know whether anything new arrived."""
        return state_of(ref)

    @app.get("/api/runs/{ref}/stream")
    async def run_stream(ref: str, request: Request) -> Response:
        """Server-sent events: the run's state (as /state) each time something new is recorded,
        checked every half second; a comment line every 15 s keeps the connection open. The
        stream ends once a finished run's last state is sent, and after an hour at most (the
        browser's EventSource then reconnects). Streams are capped in all and per client: past
        the cap the answer is 429, on which the page polls /state instead."""
        from starlette.concurrency import run_in_threadpool

        client = _client(request)
        if not gate.enter(client):
            resp = _error(429, "too many live streams are open", f"poll /api/runs/{ref}/state instead",
                          "streams")
            resp.headers["Retry-After"] = "30"
            return resp
        try:
            first = await run_in_threadpool(state_of, ref)  # an unknown run is a 404 before the stream
        except BaseException:
            gate.leave(client)
            raise

        async def events() -> Any:
            import asyncio

            last, sent_at, started = None, 0.0, time.monotonic()
            state = first
            while time.monotonic() - started < STREAM_MAX_S:
                key = (json.dumps(state["cursor"], sort_keys=True), state["live_status"])
                if key != last:
                    yield f"data: {json.dumps(state)}\n\n"
                    last, sent_at = key, time.monotonic()
                    if state["live_status"] != "running":
                        return
                elif time.monotonic() - sent_at > 15:
                    yield ": keep-alive\n\n"
                    sent_at = time.monotonic()
                await asyncio.sleep(STREAM_CHECK_S)
                try:
                    state = await run_in_threadpool(state_of, first["id"])
                except LmdevError:
                    return

        return _GatedStream(events(), lambda: gate.leave(client), media_type="text/event-stream",
                            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api/runs/{ref}/metrics")
    def run_metrics(ref: str, keys: str = Query(..., description="comma-separated metric keys"),
                    points: int = Query(DEFAULT_POINTS, ge=4, le=MAX_POINTS),
                    lineage: bool = Query(False, description="add the ancestors' points up to each fork step")
                    ) -> Response:
        wanted = [k for k in keys.split(",") if k][:200]
        with reader.query() as q:
            info = q.run(ref)
            arrays = q.series(info, wanted)
            inherited = _inherited(q, info, wanted, points) if lineage else {}
        # series are plain lists of floats: sent as they are, without FastAPI's (slow) encoder walk
        return JSONResponse({"id": info.id, "start_time": info.start_time,
                             "series": {k: _series(arrays[k], points) for k in wanted if k in arrays},
                             "inherited": inherited})

    @app.get("/api/runs/{ref}/system")
    def run_system(ref: str, points: int = Query(DEFAULT_POINTS, ge=4, le=MAX_POINTS)) -> dict[str, Any]:
        import numpy as np

        with reader.query() as q:
            info = q.run(ref)
            groups = q.system_series(info)
        out = {}
        for name, (times, values) in sorted(groups.items()):
            s = series(np.zeros(len(times), dtype=np.int64), times, values, points=points)
            s.pop("step")
            out[name] = s
        return {"id": info.id, "start_time": info.start_time, "series": out}

    @app.get("/api/runs/{ref}/events")
    def run_events(ref: str) -> dict[str, Any]:
        with reader.query() as q:
            info = q.run(ref)
            events = q.events(info)
        return {"id": info.id, "events": [{"time": e.time, "level": e.level, "message": e.message, "data": e.data}
                                          for e in events[-2000:]], "count": len(events)}

    def _run_folder(run_id: str) -> Path | None:
        """The run's folder, or None for an id that would lead outside the store."""
        try:
            return run_path(root, run_id)
        except InvalidName:
            return None

    def _inside(path: Path, folder: Path) -> bool:
        try:
            path.resolve(strict=True).relative_to(folder.resolve(strict=True))
            return True
        except (OSError, ValueError, RuntimeError):
            return False

    @app.get("/api/runs/{ref}/media")
    def run_media(ref: str, key: str | None = None, kind: str | None = None,
                  limit: int = Query(1000, ge=1, le=5000)) -> Response:
        """The run's histograms, images, texts and tables; images with a URL to their PNG."""
        with reader.query() as q:
            info = q.run(ref)
            keys = q.media_keys(info)
            items, truncated = q.media(info, key=key, kind=kind, limit=limit)
        folder = _run_folder(info.id)
        out = []
        for it in items:
            d = {"key": it.key, "kind": it.kind, "step": it.step, "time": it.time, "payload": it.payload}
            if it.path is not None and folder is not None and _inside(Path(it.path), folder):
                rel = Path(it.path).resolve().relative_to(folder.resolve()).as_posix()
                d["url"] = f"/api/runs/{urllib.parse.quote(info.id)}/files/{urllib.parse.quote(rel)}"
            out.append(d)
        return JSONResponse(jsonable_encoder({"id": info.id, "keys": [vars(k) for k in keys], "items": out,
                                              "truncated": truncated}))

    @app.get("/api/runs/{ref}/artifacts")
    def run_artifacts(ref: str) -> dict[str, Any]:
        with reader.query() as q:
            info = q.run(ref)
            arts = q.artifacts(info)
        folder = _run_folder(info.id)
        out = []
        for a in arts:
            p = Path(a.path)
            rel = None
            if folder is not None and p.is_absolute() and _inside(p, folder):
                rel = p.resolve().relative_to(folder.resolve()).as_posix()
            out.append({"path": a.path, "kind": a.kind, "size": a.size, "sha256": a.sha256, "time": a.time,
                        "exists": p.is_file(), "download": rel and f"/api/runs/{urllib.parse.quote(info.id)}/files/"
                        + urllib.parse.quote(rel)})
        return {"id": info.id, "artifacts": out}

    @app.get("/api/runs/{ref}/output")
    def run_output(ref: str, bytes_: int = Query(OUTPUT_TAIL_BYTES, alias="bytes", ge=1, le=1 << 20)) -> dict[str, Any]:
        with reader.query() as q:
            info = q.run(ref)
        folder = _run_folder(info.id)
        out: dict[str, Any] = {}
        if folder is not None:
            for name in OUTPUT_FILES:
                p = folder / name
                if p.is_file() and _inside(p, folder) and _inside(p, root):
                    size = p.stat().st_size
                    with open(p, "rb") as f:
                        f.seek(max(0, size - bytes_))
                        out[name] = {"size": size, "tail": f.read().decode("utf-8", "replace"), "truncated": size > bytes_}
        return {"id": info.id, "files": out}

    @app.get("/api/runs/{ref}/files/{rel:path}")
    def run_file(ref: str, rel: str, request: Request) -> Response:
        """A file of the run's folder; nothing outside it (no .., no encoded .., no absolute path,
        no symlink out)."""
        raw = request.url.path.split("/files/", 1)[-1]
        bad = _bad_path(rel) or _bad_path(urllib.parse.unquote(raw))
        if bad:
            return _error(400, f"refused path: {bad}", "artifact paths are relative to the run's folder", "path")
        with reader.query() as q:
            info = q.run(ref)
        folder = _run_folder(info.id)
        if folder is None:
            return _error(404, "no such file in this run's folder", None, "not_found")
        target = folder / rel
        if not _inside(target, folder) or not _inside(target, root):
            return _error(404, "no such file in this run's folder", None, "not_found")
        if not target.resolve().is_file():
            return _error(404, "no such file in this run's folder", None, "not_found")
        # images (the Media tab shows them) as what they are; everything else as a download
        image = IMAGE_TYPES.get(target.suffix.lower())
        if image is not None:
            return FileResponse(target.resolve(), media_type=image)
        return FileResponse(target.resolve(), media_type="application/octet-stream", filename=target.name)

    @app.get("/api/compare")
    def compare(runs: str = Query(..., description="comma-separated run ids"), key: str | None = None,
                keys: str | None = Query(None, description="comma-separated metric keys (several on one chart)"),
                points: int = Query(DEFAULT_POINTS, ge=4, le=MAX_POINTS),
                lineage: bool = Query(False, description="add each fork's ancestors' points")) -> Response:
        from lmdev.track.metric_names import aliases

        refs = [r for r in runs.split(",") if r][:MAX_COMPARE]
        wanted = [k for k in (keys or "").split(",") if k][:MAX_COMPARE_KEYS]
        if key and key not in wanted:
            wanted.insert(0, key)
        with reader.query() as q:
            infos = [q.run(r) for r in refs]
            # keys by canonical name: a Keras run's val_loss overlays an lmdev run's val/loss
            stored = [aliases(s.key for s in q.summaries(info)) for info in infos]
            counts: dict[str, int] = {}
            for names in stored:
                for k in names:
                    counts[k] = counts.get(k, 0) + 1
            by_key: dict[str, dict[str, Any]] = {}
            inherited: dict[str, dict[str, Any]] = {}
            for info, names in zip(infos, stored):
                originals = {k: names.get(k, [k])[0] for k in wanted}
                arrays = q.series(info, list(originals.values()))
                for k, original in originals.items():
                    if original in arrays:
                        by_key.setdefault(k, {})[info.id] = _series(arrays[original], points)
                if lineage and info.parent_id:
                    for k, s in _inherited(q, info, list(originals.values()), points).items():
                        inherited.setdefault(k, {})[info.id] = s
        return JSONResponse({
            "runs": [{"id": i.id, "name": i.name, "start_time": i.start_time, "status": live_status(i),
                      "parent_id": i.parent_id, "fork_step": fork_step(i)} for i in infos],
            "keys": sorted(counts), "common_keys": sorted(k for k, n in counts.items() if n == len(infos)),
            "key": key, "series": by_key.get(key, {}) if key else {}, "by_key": by_key,
            "inherited": inherited, "config_diff": jsonable_encoder(config_diff([i.config for i in infos]))})

    @app.get("/api/hparams")
    def hparams(project: str | None = None, metric: str | None = None,
                limit: int = Query(500, ge=1, le=5000)) -> dict[str, Any]:
        """The runs' flattened configs (``optimizer.lr``) beside one final metric, for the
        hyper-parameters view."""
        with reader.query() as q:
            infos, _bad = q.runs(project=project, limit=limit)
            table = q.table_metrics()
            finals = q.final_values(infos, _spellings(q, metric)) if metric else {}
        return hparams_document(infos, table, metric, finals)

    @app.get("/api/compress")
    def compress_runs(limit: int = Query(200, ge=1, le=5000)) -> dict[str, Any]:
        """The runs `lmdev compress` recorded (tag ``lmdev-compress``): each variant's settings,
        its source run and its measurements (the ``compress/*`` metrics)."""
        with reader.query() as q:
            infos, _bad = q.runs()
            out = []
            for info in infos:
                if COMPRESS_TAG not in info.tags:
                    continue
                source: dict[str, str | None] | None = None
                if info.parent_id:
                    try:
                        p = q.run(info.parent_id)
                        source = {"id": p.id, "name": p.name}
                    except LmdevError:
                        source = {"id": info.parent_id, "name": None}
                measured = {s.key.split("/", 1)[1]: D.json_float(s.last) for s in q.summaries(info)
                            if s.key.startswith("compress/")}
                cfg = info.config if isinstance(info.config, dict) else {}
                out.append({"id": info.id, "name": info.name, "status": live_status(info),
                            "start_time": info.start_time, "source": source, "settings": cfg.get("compress") or {},
                            "target": cfg.get("target"), "max_drop": cfg.get("max_drop"), "measured": measured})
                if len(out) >= limit:
                    break
        return {"runs": out}

    @app.get("/api/runs/{ref}/lineage")
    def run_lineage(ref: str) -> dict[str, Any]:
        """The run's parent (a fork's), its forks with their fork steps, and its resumes."""
        with reader.query() as q:
            info = q.run(ref)
            return D.lineage_dict(q.lineage(info))

    machine_cache: dict[str, Any] = {}
    machine_lock = threading.Lock()

    @app.get("/api/machine")
    def machine(refresh: bool = False) -> dict[str, Any]:
        with machine_lock:
            cached = machine_cache.get("doctor")
            if refresh or cached is None or time.time() - cached[0] > 300:
                try:
                    if doctor is not None:
                        report = doctor()
                    else:
                        from lmdev.diagnose.report import doctor as run_doctor

                        report = run_doctor().to_dict()
                    cached = (time.time(), report, None)
                except Exception as exc:  # a probe bug must not take the dashboard down
                    cached = (time.time(), None, f"{type(exc).__name__}: {exc}")
                machine_cache["doctor"] = cached
        bench = None
        bench_path = root / "bench" / "latest.json"
        if bench_path.is_file():
            try:
                bench = json.loads(bench_path.read_text("utf-8"))
            except (OSError, ValueError):
                bench = None
        return {"collected": cached[0], "doctor": cached[1], "doctor_error": cached[2], "bench": bench,
                "bench_path": str(bench_path)}

    _add_plan_routes(app)

    @app.get("/api/runs/{ref}/explanations")
    def run_explanations(ref: str) -> dict[str, Any]:
        """The explanations `lmdev explain` kept with the run (explain/<step>-<method>.json in its
        folder), parsed; a file too large, unreadable or of another schema is listed as skipped."""
        from lmdev.explain.record import FOLDER

        with reader.query() as q:
            info = q.run(ref)
        folder = _run_folder(info.id)
        sub = folder / FOLDER if folder is not None else None
        if folder is None or sub is None or not sub.is_dir() or not _inside(sub, folder) or not _inside(sub, root):
            return {"id": info.id, "explanations": [], "skipped": []}
        files = sorted((p for p in sub.glob("*.json") if _inside(p, sub)), key=_explanation_order)
        items, skipped = [], []
        for p in files[:MAX_EXPLANATIONS]:
            doc, problem = _read_explanation(p)
            if doc is None:
                skipped.append({"file": p.name, "problem": problem})
            else:
                items.append(dict(doc, file=p.name))
        skipped += [{"file": p.name, "problem": "more than the dashboard shows"} for p in files[MAX_EXPLANATIONS:]]
        return {"id": info.id, "explanations": items, "skipped": skipped}

    @app.get("/api/{rest:path}", include_in_schema=False)
    def api_404(rest: str) -> Response:
        return _error(404, f"no API endpoint /api/{rest}", None, "not_found")

    @app.get("/{rest:path}", include_in_schema=False)
    def page_404(rest: str) -> Response:
        return _page(404, "Not found", f"There is no page /{rest}.")

    return app


def _bad_path(rel: str) -> str | None:
    if not rel:
        return "empty"
    if "\x00" in rel:
        return "NUL byte"
    if "\\" in rel:
        return "backslash"
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return "absolute path"
    if "%" in rel:  # still encoded after decoding: double encoding
        return "encoded characters"
    if any(part in ("..", ".") for part in rel.split("/")):
        return "'..' or '.' segment"
    return None


def _canonical_metrics(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The runs table's metrics under one name per quantity (Keras' ``val_loss`` is ``val/loss``),
    each with the stored spellings as ``aliases``."""
    from lmdev.track.metric_names import aliases

    return {name: dict(metrics[names[0]], aliases=names) for name, names in aliases(metrics).items()}


def _series(s: Series, points: int) -> dict[str, Any]:
    return series(s.steps, s.times, s.values, points=points)


def _inherited(q: StoreQuery, run: RunInfo, keys: list[str], points: int) -> dict[str, Any]:
    """{key: the ancestors' points a fork continues}: its parent's points up to the fork step,
    before them the grandparent's up to the parent's fork step, and so on (a fork whose step the
    store does not hold continues its parent up to its own first step)."""
    import numpy as np

    own = q.series(run, keys)
    pieces: dict[str, list[Series]] = {k: [] for k in keys}
    upper = {k: _fork_limit(run, own.get(k)) for k in keys}
    child, seen = run, {run.id}
    while child.parent_id and child.parent_id not in seen and len(seen) <= MAX_ANCESTORS:
        try:
            parent = q.run(child.parent_id)
        except DamagedRun:
            break
        except LmdevError:  # the parent was deleted
            break
        seen.add(parent.id)
        got = q.series(parent, keys)
        for k in keys:
            s = got.get(k)
            if s is None or upper[k] is None:
                continue
            keep = s.steps <= upper[k]
            if keep.any():
                pieces[k].insert(0, Series(s.steps[keep], s.times[keep], s.values[keep]))
                first = int(s.steps[keep][0]) - 1
                above = _fork_limit(parent, s) if parent.parent_id else None
                upper[k] = first if above is None else min(first, above)
        child = parent
    out = {}
    for k, ps in pieces.items():
        if ps:
            out[k] = _series(Series(np.concatenate([p.steps for p in ps]), np.concatenate([p.times for p in ps]),
                                    np.concatenate([p.values for p in ps])), points)
    return out


def _spellings(q: StoreQuery, metric: str) -> list[str]:
    """``metric`` and the stored keys that are the same metric (``val_loss`` for ``val/loss``)."""
    from lmdev.track.metric_names import canonical

    return [metric] + [k for k in q.metric_keys() if k != metric and canonical(k) == canonical(metric)]


def _fork_limit(run: RunInfo, own: Series | None) -> int | None:
    """The last step of its parent that a fork continues: its fork step, else its first step - 1."""
    step = fork_step(run)
    if step is not None:
        return step
    if own is not None and own.steps.size:
        return int(own.steps[0]) - 1
    return None


def hparams_document(runs: list[RunInfo], table: dict[str, Any], metric: str | None,
                     finals: dict[str, float]) -> dict[str, Any]:
    """The hyper-parameters view: each run's scalar config values (flattened) and its final
    ``metric``; ``params``: the keys whose values differ between the runs."""
    from lmdev.track.export import flatten_config
    from lmdev.track.metric_names import canonical

    rows: list[dict[str, Any]] = []
    values: dict[str, set[str]] = {}
    flats: list[dict[str, Any]] = []
    for r in runs:
        flat = {k: v for k, v in flatten_config(r.config).items()
                if v is None or isinstance(v, (bool, int, float, str))}
        flats.append(flat)
        for k, v in flat.items():
            values.setdefault(k, set()).add(json.dumps(v))
        final = finals.get(r.id)
        rows.append({"id": r.id, "name": r.name, "project": r.project, "status": live_status(r),
                     "config": flat, "value": None if final is None else D.json_float(final)})
    metrics = sorted({canonical(k) for m in table.values() for k in m} | ({metric} if metric else set()))
    params = sorted(k for k, v in values.items() if len(v) > 1 or sum(k in f for f in flats) < len(flats))
    return {"metric": metric, "higher_is_better": bool(metric) and D.higher_is_better(metric or ""),
            "metrics": metrics, "params": params, "runs": rows}


def config_diff(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The flattened config keys whose values differ between the runs (or are missing in some)."""
    from lmdev.track.export import flatten_config

    flat = [flatten_config(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    out = []
    for k in keys:
        values = [f.get(k, _MISSING) for f in flat]
        encoded = {json.dumps(v, sort_keys=True, default=str) for v in values}
        if len(encoded) > 1:
            out.append({"key": k, "values": [None if v is _MISSING else v for v in values],
                        "missing": [v is _MISSING for v in values]})
    return out


_MISSING = object()


def _add_plan_routes(app: FastAPI) -> None:
    """The Plan page's API: the same planner as `lmdev plan` (when it is installed)."""
    try:
        from lmdev.plan.advisor import default_precision, make_plan
        from lmdev.plan.hardware import resolve_hardware
        from lmdev.plan.memory import ATTENTIONS, OPTIMIZERS, PRECISIONS, TASKS, Workload
        from lmdev.plan.model_input import resolve_model
    except ImportError:
        return

    @app.get("/api/plan/options")
    def plan_options() -> dict[str, Any]:
        from lmdev.catalog.gpus import gpus
        from lmdev.catalog.models import presets

        return {"available": True, "models": sorted(presets()), "hardware": ["this", *sorted(gpus())],
                "tasks": list(TASKS), "precisions": ["auto", *PRECISIONS], "optimizers": list(OPTIMIZERS),
                "attentions": list(ATTENTIONS)}

    @app.get("/api/plan")
    def plan(model: str, task: str = "train", precision: str = "auto", batch: int = Query(1, ge=1, le=1 << 16),
             seq: int = Query(2048, ge=1, le=1 << 22), hardware: str = "this", optimizer: str = "adamw",
             devices: int = Query(1, ge=1, le=4096), activation_checkpointing: bool = False) -> dict[str, Any]:
        from lmdev.catalog.models import presets

        if model not in presets():  # only catalog presets: a typed path is never read
            raise LmdevError(f"no such model preset {model!r}", "pick one of the catalog's presets")
        spec, source = resolve_model(model)
        hws = resolve_hardware(hardware)
        if precision == "auto":  # the first hardware's best supported precision (bf16, else fp16)
            precision = default_precision(hws[0])
        w = Workload(task=task, precision=precision, optimizer=optimizer, batch=batch, seq=seq, devices=devices,
                     activation_checkpointing=activation_checkpointing)
        return make_plan(spec, w, hws, source=source).to_dict()


def _explanation_order(path: Path) -> tuple[int, str]:
    """explain/<step>-<method>.json by step, then method."""
    step, _, method = path.stem.partition("-")
    return (int(step) if step.isdigit() else -1, method)


def _read_explanation(path: Path) -> tuple[dict[str, Any] | None, str]:
    """A stored explanation (schema lmdev.explain/1), or None and why it was not read."""
    try:
        if path.stat().st_size > MAX_EXPLANATION_BYTES:
            return None, f"larger than {MAX_EXPLANATION_BYTES >> 20} MiB"
        doc = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"unreadable: {exc}"
    if not isinstance(doc, dict) or doc.get("schema") != "lmdev.explain/1" or not isinstance(doc.get("items"), list):
        return None, "not an lmdev.explain/1 document"
    return doc, ""


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} in JSON")
