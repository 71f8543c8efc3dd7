"""The stand-in's HTTP + websocket server (aiohttp, as ComfyUI's own server.py).

    python -m tests.standin.comfyui --port 0 --base-dir DIR --object-info FILE [--behaviour JSON]

prints `PORT <port>` once the port is bound and `READY <port>` once it answers; until then
(`startup_delay_s`) connections are refused, as while a real ComfyUI loads its nodes.

Routes follow ComfyUI 0.8.0's server.py (also under /api/...). Extra routes for tests:
GET/POST /_standin/behaviour (read / replace the behaviour switches), GET /_standin/requests
(the log of received requests).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import heapq
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from .engine import Behaviour, Executor
from .schema import Dirs, Schema

MAXIMUM_HISTORY_SIZE = 10000
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600,
                   "extension": {"manager": {"supports_v4": True}}}
_CLOSE_SOCKETS = "__close_sockets__"


class PromptQueue:
    """execution.PromptQueue: pending heap, running items, history."""

    def __init__(self, server: "StandIn"):
        self.server = server
        self.mutex = threading.RLock()
        self.not_empty = threading.Condition(self.mutex)
        self.task_counter = 0
        self.queue: list = []
        self.currently_running: dict[int, tuple] = {}
        self.history: dict[str, dict] = {}

    def put(self, item: tuple) -> None:
        with self.mutex:
            heapq.heappush(self.queue, item)
            self.server.queue_updated()
            self.not_empty.notify()

    def get(self) -> tuple[tuple, int]:
        with self.not_empty:
            while not self.queue:
                self.not_empty.wait()
            item = heapq.heappop(self.queue)
            i = self.task_counter
            self.currently_running[i] = copy.deepcopy(item)
            self.task_counter += 1
            self.server.queue_updated()
            return item, i

    def task_done(self, item_id: int, history_result: dict, status: dict) -> None:
        with self.mutex:
            prompt = self.currently_running.pop(item_id)
            if len(self.history) > MAXIMUM_HISTORY_SIZE:
                self.history.pop(next(iter(self.history)))
            self.history[prompt[1]] = {"prompt": list(prompt[:5]), "outputs": {}, "status": status}
            self.history[prompt[1]].update(history_result)
            self.server.queue_updated()

    def remaining(self) -> int:
        with self.mutex:
            return len(self.queue) + len(self.currently_running)

    def current(self) -> tuple[list, list]:
        with self.mutex:
            running = [list(x[:5]) for x in self.currently_running.values()]
            pending = [list(x[:5]) for x in sorted(self.queue)]
            return running, pending

    def wipe(self) -> None:
        with self.mutex:
            self.queue = []
            self.server.queue_updated()

    def delete(self, prompt_id: str) -> None:
        with self.mutex:
            for i, item in enumerate(self.queue):
                if item[1] == prompt_id:
                    self.queue.pop(i)
                    heapq.heapify(self.queue)
                    self.server.queue_updated()
                    return

    def get_history(self, prompt_id: str | None = None, max_items: int | None = None,
                    offset: int = -1) -> dict:
        with self.mutex:
            if prompt_id is not None:
                return {prompt_id: copy.deepcopy(self.history[prompt_id])} if prompt_id in self.history else {}
            out = {}
            if offset < 0 and max_items is not None:
                offset = len(self.history) - max_items
            for i, key in enumerate(self.history):
                if i >= offset:
                    out[key] = copy.deepcopy(self.history[key])
                    if max_items is not None and len(out) >= max_items:
                        break
            return out


class StandIn:
    def __init__(self, base_dir: Path, object_info: Path, behaviour: dict, scratch: Path):
        self.dirs = Dirs(base_dir)
        self.dirs.make()
        scratch.mkdir(parents=True, exist_ok=True)
        self.schema = Schema(object_info, self.dirs)
        self.behaviour = Behaviour(dict(behaviour))
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.number = 0
        self.queue = PromptQueue(self)
        self.request_log: list[dict] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.messages: asyncio.Queue | None = None
        self.executor = Executor(self.schema, self.dirs, scratch, self.behaviour, self.send_sync,
                                 self.send_binary_sync, self.drop_sockets)

    # --- websocket messages ----------------------------------------------------------------------

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        self.loop.call_soon_threadsafe(self.messages.put_nowait, (event, data, sid))

    def send_binary_sync(self, event: int, payload: bytes) -> None:
        self.send_sync(event, event.to_bytes(4, "big") + payload, None)

    def drop_sockets(self) -> None:
        """The network drops every websocket once; the run goes on (behaviour ws_drop)."""
        self.send_sync(_CLOSE_SOCKETS, None, None)

    def queue_updated(self) -> None:
        self.send_sync("status", {"status": {"exec_info": {"queue_remaining": self.queue.remaining()}}})

    async def publish(self) -> None:
        while True:
            event, data, sid = await self.messages.get()
            if event == _CLOSE_SOCKETS:
                for ws in list(self.sockets.values()):
                    await ws.close(code=1011, message=b"stand-in: websocket dropped")
                self.sockets.clear()
                continue
            targets = list(self.sockets.values()) if sid is None else [self.sockets[sid]] if sid in self.sockets else []
            for ws in targets:
                try:
                    if isinstance(data, bytes):
                        await ws.send_bytes(data)
                    else:
                        await ws.send_json({"type": event, "data": data})
                except (ConnectionError, RuntimeError):
                    pass

    # --- the prompt worker thread ------------------------------------------------------------------

    def prompt_worker(self) -> None:
        while True:
            item, item_id = self.queue.get()
            prompt_id = item[1]
            self.executor.execute(item[2], prompt_id, item[3], item[4])
            ex = self.executor
            self.queue.task_done(item_id, ex.history_result, {
                "status_str": "success" if ex.success else "error",
                "completed": ex.success, "messages": ex.status_messages})
            if ex.client_id is not None:
                self.send_sync("executing", {"node": None, "prompt_id": prompt_id}, ex.client_id)

    # --- HTTP --------------------------------------------------------------------------------------

    @web.middleware
    async def log_requests(self, request: web.Request, handler):
        entry: dict[str, Any] = {"t": time.time(), "method": request.method, "path": request.path,
                                 "query": dict(request.query)}
        if request.can_read_body and not request.content_type.startswith("multipart/"):
            try:
                entry["body"] = json.loads(await request.text())
            except ValueError:
                entry["body"] = None
        self.request_log.append(entry)
        response = await handler(request)
        entry["status"] = response.status
        return response

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/ws", self.websocket),
            web.get("/system_stats", self.system_stats),
            web.get("/features", lambda r: web.json_response(SERVER_FEATURES)),
            web.get("/queue", self.get_queue),
            web.post("/queue", self.post_queue),
            web.get("/prompt", lambda r: web.json_response({"exec_info": {"queue_remaining": self.queue.remaining()}})),
            web.post("/prompt", self.post_prompt),
            web.post("/interrupt", self.post_interrupt),
            web.post("/free", lambda r: web.Response(status=200)),
            web.get("/history", self.get_history),
            web.get("/history/{prompt_id}", self.get_history_item),
            web.post("/history", self.post_history),
            web.get("/object_info", lambda r: web.json_response(self.schema.all_info())),
            web.get("/object_info/{node_class}", self.get_object_info_class),
            web.get("/models", lambda r: web.json_response(sorted(p.name for p in self.dirs.models.iterdir() if p.is_dir()))),
            web.get("/models/{folder}", self.get_models),
            web.get("/view", self.view),
            web.post("/upload/image", self.upload),
        ]

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "") or uuid.uuid4().hex
        self.sockets.pop(sid, None)
        self.sockets[sid] = ws
        try:
            await ws.send_json({"type": "status", "data": {
                "status": {"exec_info": {"queue_remaining": self.queue.remaining()}}, "sid": sid}})
            if self.executor.client_id == sid and self.executor.last_node_id is not None:
                await ws.send_json({"type": "executing", "data": {"node": self.executor.last_node_id}})
            first = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                        if first and data.get("type") == "feature_flags":
                            await ws.send_json({"type": "feature_flags", "data": SERVER_FEATURES})
                    except (ValueError, AttributeError):
                        pass
                    first = False
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            if self.sockets.get(sid) is ws:
                self.sockets.pop(sid, None)
        return ws

    async def system_stats(self, request: web.Request) -> web.Response:
        vram = 85_899_345_920
        return web.json_response({
            "system": {"os": "linux", "ram_total": 135_089_496_064, "ram_free": 120_000_000_000,
                       "comfyui_version": "0.8.0", "required_frontend_version": "1.35.9",
                       "installed_templates_version": "0.7.67", "required_templates_version": "0.7.67",
                       "python_version": sys.version, "pytorch_version": "2.9.1+cu128",
                       "embedded_python": False, "argv": ["main.py", *sys.argv[1:]]},
            "devices": [{"name": "cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync", "type": "cuda", "index": 0,
                         "vram_total": vram, "vram_free": vram - 1_500_000_000,
                         "torch_vram_total": 0, "torch_vram_free": 0}],
        })

    async def get_queue(self, request: web.Request) -> web.Response:
        running, pending = self.queue.current()
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: web.Request) -> web.Response:
        data = await request.json()
        if data.get("clear"):
            self.queue.wipe()
        for prompt_id in data.get("delete", []):
            self.queue.delete(prompt_id)
        return web.Response(status=200)

    async def post_prompt(self, request: web.Request) -> web.Response:
        data = await request.json()
        if "number" in data:
            number = float(data["number"])
        else:
            number = self.number
            if data.get("front"):
                number = -number
            self.number += 1
        if "prompt" not in data:
            return web.json_response({"error": {"type": "no_prompt", "message": "No prompt provided",
                                                "details": "No prompt provided", "extra_info": {}},
                                      "node_errors": {}}, status=400)
        prompt = data["prompt"]
        prompt_id = str(data.get("prompt_id", uuid.uuid4()))
        valid = self.schema.validate_prompt(prompt, data.get("partial_execution_targets"))
        extra_data = dict(data.get("extra_data", {}))
        if "client_id" in data:
            extra_data["client_id"] = data["client_id"]
        if not valid[0]:
            return web.json_response({"error": valid[1], "node_errors": valid[3]}, status=400)
        extra_data["create_time"] = int(time.time() * 1000)
        self.queue.put((number, prompt_id, prompt, extra_data, valid[2], {}))
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": valid[3]})

    async def post_interrupt(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except ValueError:
            data = {}
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        running, _ = self.queue.current()
        if not prompt_id or any(item[1] == prompt_id for item in running):
            self.executor.interrupt.set()
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        max_items = request.query.get("max_items")
        offset = int(request.query.get("offset", -1))
        return web.json_response(self.queue.get_history(max_items=int(max_items) if max_items else None,
                                                        offset=offset))

    async def get_history_item(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue.get_history(prompt_id=request.match_info["prompt_id"]))

    async def post_history(self, request: web.Request) -> web.Response:
        data = await request.json()
        with self.queue.mutex:
            if data.get("clear"):
                self.queue.history = {}
            for prompt_id in data.get("delete", []):
                self.queue.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def get_object_info_class(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        return web.json_response({name: self.schema.info(name)} if name in self.schema else {})

    async def get_models(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if not (self.dirs.models / folder).is_dir():
            return web.Response(status=404)
        return web.json_response(self.dirs.model_files(folder))

    async def view(self, request: web.Request) -> web.StreamResponse:
        filename = request.query.get("filename")
        if not filename:
            return web.Response(status=404)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        folder = self.dirs.by_type(request.query.get("type", "output"))
        if folder is None:
            return web.Response(status=400)
        if "subfolder" in request.query:
            full = folder / request.query["subfolder"]
            if os.path.commonpath((os.path.abspath(full), str(folder))) != str(folder):
                return web.Response(status=403)
            folder = full
        path = folder / os.path.basename(filename)
        if not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{path.name}"'})

    async def upload(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        upload_dir = self.dirs.by_type(post.get("type") or "input")
        if upload_dir is None or image is None or not getattr(image, "filename", None):
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        folder = upload_dir / os.path.normpath(subfolder)
        filename = image.filename
        path = Path(os.path.abspath(folder / filename))
        if os.path.commonpath((str(upload_dir), str(path))) != str(upload_dir):
            return web.Response(status=400)
        folder.mkdir(parents=True, exist_ok=True)
        content = image.file.read()
        if str(post.get("overwrite")) not in ("true", "1"):
            stem, ext = os.path.splitext(filename)
            i = 1
            while path.exists() and path.read_bytes() != content:
                filename = f"{stem} ({i}){ext}"
                path = folder / filename
                i += 1
        path.write_bytes(content)
        return web.json_response({"name": filename, "subfolder": subfolder,
                                  "type": post.get("type") or "input"})

    # --- test-only routes -------------------------------------------------------------------------------

    async def get_behaviour(self, request: web.Request) -> web.Response:
        return web.json_response(self.behaviour.raw)

    async def set_behaviour(self, request: web.Request) -> web.Response:
        self.behaviour.raw = dict(await request.json())
        return web.json_response(self.behaviour.raw)

    async def get_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.request_log)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.log_requests], client_max_size=SERVER_FEATURES["max_upload_size"])
        routes = self.routes()
        app.add_routes(routes)
        app.add_routes([web.route(r.method, "/api" + r.path, r.handler) for r in routes])
        app.add_routes([web.get("/_standin/behaviour", self.get_behaviour),
                        web.post("/_standin/behaviour", self.set_behaviour),
                        web.get("/_standin/requests", self.get_requests)])
        return app


async def serve(standin: StandIn, port: int) -> None:
    standin.loop = asyncio.get_running_loop()
    standin.messages = asyncio.Queue()
    # Bound but not listening: clients get "connection refused" while the stand-in "starts".
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    bound = sock.getsockname()[1]
    print(f"PORT {bound}", flush=True)
    delay = float(standin.behaviour.raw.get("startup_delay_s", 0))
    if delay:
        await asyncio.sleep(delay)
    runner = web.AppRunner(standin.app(), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    asyncio.create_task(standin.publish())
    threading.Thread(target=standin.prompt_worker, daemon=True, name="prompt_worker").start()
    print(f"READY {bound}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--base-dir", type=Path, required=True, help="ComfyUI folder (input/ output/ temp/ models/)")
    parser.add_argument("--object-info", type=Path, required=True, help="recorded GET /object_info JSON")
    parser.add_argument("--behaviour", default="{}", help="behaviour switches as JSON (see engine.Behaviour)")
    parser.add_argument("--scratch-dir", type=Path, default=None,
                        help="where intermediate media go (default <base-dir>/.standin-scratch)")
    args = parser.parse_args(argv)
    base = args.base_dir.resolve()
    standin = StandIn(base, args.object_info, json.loads(args.behaviour),
                      (args.scratch_dir or base / ".standin-scratch").resolve())
    try:
        asyncio.run(serve(standin, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
