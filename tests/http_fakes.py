"""Real HTTP servers (uvicorn on loopback, in a thread) that behave badly on purpose: slow health,
slow predictions, wrong answer counts. They exercise the judge emulator's limits."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI, Request

from tournament.serving.process import free_port


def make_app(mode: str = "batch", predict_delay: float = 0.0, health_delay: float = 0.0,
             answer: str = "warp 32 threads", drop_one: bool = False) -> FastAPI:
    app = FastAPI()
    born: list[float] = []  # set at the first poll, so start-up time of the thread doesn't count

    @app.get("/")
    async def health():
        born[:] = born or [time.monotonic()]
        if time.monotonic() - born[0] < health_delay:
            from fastapi.responses import JSONResponse

            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": mode}

    @app.post("/predict")
    async def predict(request: Request):
        body = await request.json()
        await asyncio.sleep(predict_delay)
        if isinstance(body["prompt"], list):
            out = [answer for _ in body["prompt"]]
            return {"response": out[:-1] if drop_one else out}
        return {"response": answer}

    return app


@contextmanager
def running(app: FastAPI):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
