"""whisperwire as a Ray Serve application (`whisperwire serve --ray`, or `serve run` / `serve
deploy` with `import_path: whisperwire.ray_app:app_from`).

Each replica of the `whisperwire` deployment is the whole server of `server.create_app` — every
dialect, clips, the OpenAI and Deepgram APIs, /health, /metrics — with its own copy of the model;
Ray's proxy routes each connection to a replica, and a WebSocket session stays in the replica
that accepted it. In the proxy, `ray_proxy` turns a replica lost under a session into close 1012.
Imported only where Ray is installed (the `ray` extra).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from ray.serve import Application, Deployment
from ray.serve.config import RequestRouterConfig
from ray.serve.handle import DeploymentHandle

from whisperwire.allocator import limit_arenas
from whisperwire.metrics import Metrics
from whisperwire.ray_proxy import CALLBACK
from whisperwire.ray_router import STATS_PERIOD_S
from whisperwire.server_state import FINALISE_S
from whisperwire.settings import RayOptions, Settings, UsageError, flags, load_settings

__all__ = [
    "APP_NAME",
    "DEPLOYMENT",
    "Whisperwire",
    "app_from",
    "application",
    "deployment",
    "replica_settings",
    "run_ray",
    "settings_from",
]

log = logging.getLogger("whisperwire.ray")

APP_NAME = "whisperwire"
DEPLOYMENT = "whisperwire"
PROXY_CALLBACK_VARIABLE = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
# A replica's open WebSockets count against Ray's max_ongoing_requests: past it a new
# handshake would wait in Ray's queue instead of being answered, so the limit leaves room for
# every session the replica admits (it refuses beyond them itself, with OVERLOADED) and for
# HTTP requests beside them.
HTTP_ROOM = 32
# On a stop (scale-down, redeploy, shutdown) Ray waits this long for open requests, then kills
# the replica: its clients then get 1012 from the proxy.
GRACEFUL_STOP_S = 20.0
DELETED_POLL_S = 2.0  # how often a replica asks whether its application is being deleted
ROUTER = "whisperwire.ray_router:RoomRouter"  # sends a session where there is room for it


def replica_name() -> str:
    return str(serve.get_replica_context().replica_id.unique_id)


@serve.deployment(name=DEPLOYMENT)
@serve.ingress()  # the app is built in the replica, by __serve_build_asgi_app__
class Whisperwire:
    """One replica: the settings' server, its model loaded here or decoding through the model
    deployment (`ray_model`)."""

    def __init__(
        self,
        settings: dict[str, Any],
        model: DeploymentHandle | None = None,
        share: float = 1.0,
        board: DeploymentHandle | None = None,
        sessions: DeploymentHandle | None = None,
    ) -> None:
        """`model`: the model deployment to decode through (None: load the model here), of
        whose replicas' workers this replica counts `share` as its own; `board`: the
        deployment that gathers every replica's metrics (`ray_metrics`); `sessions`: the
        board of every replica's sessions, for taking over those of a replica that died
        (`ray_sessions`)."""
        self.settings = load_settings(**settings)
        # Ray's worker runs already: its threads keep their arenas; the server's share these
        limit_arenas(self.settings.malloc_arenas)
        self.model = model
        self.share = share
        self.board = board
        self.sessions = sessions
        self._pusher: asyncio.Task[None] | None = None  # keeps the push task referenced
        self._watcher: asyncio.Task[None] | None = None  # `_finalise_when_deleted`
        self.state: Any = None  # the server's App, once built

    async def record_routing_stats(self) -> dict[str, Any]:
        """What `ray_router` ranks replicas by: the live sessions this one would still admit
        (on the app's event loop, beside its sessions), and the sessions it holds that a
        reconnecting client may resume (it routes the client here)."""
        if self.state is None:
            return {"room": 0, "at": time.time()}
        state = self.state
        return {
            "room": state.room(),
            "at": time.time(),
            "sessions": state.resumable(),
            "live": state.load.live_streams,
        }

    async def __serve_build_asgi_app__(self) -> FastAPI:
        from whisperwire.cli import checked_model, forward_config, forwarder_from, load_engine
        from whisperwire.server import create_app

        settings = self.settings
        logging.getLogger("whisperwire").setLevel(settings.log_level.upper())
        forwarding = forward_config(settings)
        if forwarding is not None:  # this replica's outbox: a slot of the shared data dir
            settings = self._claim_outbox(settings, forwarding.data_dir)
        metrics = Metrics()
        forwarder = forwarder_from(settings, metrics)
        engine: Any
        if self.model is not None:
            from whisperwire.ray_model import RemoteEngine

            info = await self.model.info.remote()
            engine = RemoteEngine(self.model, info, replica_name(), self.share)
        else:
            engine = await asyncio.to_thread(load_engine, settings, checked_model(settings))
        name = replica_name()
        exposition = None
        if self.board is not None:
            board = self.board

            async def exposition() -> bytes:  # this replica's page fresh, the others' pushed
                await board.push.remote(name, metrics.exposition())
                return bytes(await board.merged.remote())

            self._pusher = asyncio.create_task(self._push_metrics(board, name, metrics))
        link = None
        if self.sessions is not None and settings.resume_window_s > 0:
            from whisperwire.ray_sessions import BoardLink

            link = BoardLink(self.sessions, name)
            link.start()
        app = create_app(settings, engine, forwarder, metrics, name, exposition, link)
        self.state = app.state.whisperwire
        self._watcher = asyncio.create_task(self._finalise_when_deleted(self.state))
        return app

    @staticmethod
    async def _finalise_when_deleted(state: Any) -> None:
        """Once the application is being deleted (SIGTERM or Ctrl-C to `serve --ray`, `serve
        shutdown`), this replica's sessions finalise the audio they received, send their finals
        and `end`, and close (1001), as one process does on SIGTERM; else Ray would wait for
        them, then kill the replica, and the words not yet final would be lost. A replica
        stopped alone (scale-down, a new version) is not told: Ray kills it after the
        graceful stop, and its sessions go on on another replica (taken over)."""
        from ray.serve.schema import ApplicationStatus

        app = serve.get_replica_context().app_name
        while True:
            await asyncio.sleep(DELETED_POLL_S)
            try:
                status = await asyncio.to_thread(serve.status)
            except Exception as exc:  # noqa: BLE001 - the controller restarts; ask again
                log.debug("the application's status could not be read: %s", exc)
                continue
            overview = status.applications.get(app)
            if overview is not None and overview.status == ApplicationStatus.DELETING:
                log.info("the application is being deleted: finalising this replica's sessions")
                await state.drain(timeout=FINALISE_S)
                return

    @staticmethod
    async def _push_metrics(board: DeploymentHandle, name: str, metrics: Metrics) -> None:
        """Sends this replica's metrics page to the board every `PUSH_S`, for its life."""
        from whisperwire.ray_metrics import PUSH_S

        while True:
            try:
                await board.push.remote(name, metrics.exposition())
            except Exception as exc:  # noqa: BLE001 - the board restarts; try again later
                log.warning("replica %s could not push its metrics: %s", name, exc)
            await asyncio.sleep(PUSH_S)

    def _claim_outbox(self, settings: Settings, shared: Path) -> Settings:
        """The settings with --data-dir a slot of `shared`, the data dir the replicas share."""
        from whisperwire.forward.slots import claim_slot

        slot, self.outbox_claim = claim_slot(shared)  # held for this replica's life
        log.info("replica %s forwards through the outbox in %s", replica_name(), slot)
        return settings.model_copy(update={"data_dir": str(slot)})


def replica_settings(settings: Settings) -> dict[str, Any]:
    """The settings as keyword arguments for a replica (secrets kept, Ray's own left out)."""
    fields = settings.model_dump(exclude=set(RayOptions.model_fields))
    return {name: value for name, value in fields.items() if value is not None}


def deployment(settings: Settings) -> Deployment:
    """The app deployment with Ray's options from the settings (no GPU where a model
    deployment has them)."""
    gpus = 0.0 if settings.ray_model_replicas else settings.ray_replica_gpus
    return Whisperwire.options(
        num_replicas=settings.ray_replicas,
        max_ongoing_requests=settings.max_sessions + HTTP_ROOM,
        graceful_shutdown_timeout_s=GRACEFUL_STOP_S,
        request_router_config=RequestRouterConfig(
            request_router_class=ROUTER, request_routing_stats_period_s=STATS_PERIOD_S
        ),
        ray_actor_options={"num_cpus": settings.ray_replica_cpus, "num_gpus": gpus},
    )


def model_deployment(settings: Settings) -> Deployment:
    """The model deployment with Ray's options from the settings (the GPUs go to it)."""
    from whisperwire.ray_model import WhisperModel

    return WhisperModel.options(
        num_replicas=settings.ray_model_replicas,
        # every decode in flight from every app replica: the model queues, Ray need not
        max_ongoing_requests=1000,
        ray_actor_options={
            "num_cpus": settings.ray_model_cpus,
            "num_gpus": settings.ray_replica_gpus,
        },
    )


def application(settings: Settings) -> Application:
    """The app to deploy; raises UsageError on a bad forwarding value."""
    from whisperwire.cli import forward_config

    forward_config(settings)  # named here, not in each replica's failure to start
    from whisperwire.ray_metrics import MetricsBoard
    from whisperwire.ray_sessions import BEAT_S, SessionBoard

    given = replica_settings(settings)
    board = MetricsBoard.bind()
    # a dead replica's journals are kept as long as its clients may take to resume
    sessions = SessionBoard.bind(settings.resume_window_s + 2 * BEAT_S)
    if not settings.ray_model_replicas:
        return deployment(settings).bind(given, board=board, sessions=sessions)
    share = settings.ray_model_replicas / settings.ray_replicas  # of the model's workers
    model = model_deployment(settings).bind(given)
    return deployment(settings).bind(given, model, share, board, sessions)


def settings_from(args: dict[str, Any]) -> Settings:
    """A Serve config file's `args`: `whisperwire serve`'s long flags without their dashes
    (model, workers, max-lag, ray-replicas, ...); WHISPERWIRE_* variables fill in the rest.
    Raises UsageError."""
    by_flag = {
        flag[2:]: name for name in Settings.model_fields for flag in flags(name) if flag[:2] == "--"
    }
    return load_settings(**{by_flag.get(key, key): value for key, value in args.items()})


def app_from(args: dict[str, Any]) -> Application:
    """The application builder a Serve config file names (import_path)."""
    try:
        return application(settings_from(args))
    except UsageError as exc:
        raise ValueError(f"whisperwire: {exc}") from None


def run_ray(settings: Settings) -> int:
    """Starts (or joins) a Ray cluster, deploys the app behind Ray's proxy on -H/-p, and serves
    until SIGINT or SIGTERM; then the app is deleted (Ray stops its replicas)."""
    from whisperwire.cli import checked_model

    app = application(settings)
    checked_model(settings)  # a bad model or certificate fails here, before Ray starts
    # The proxy is a process of the cluster: a cluster started here inherits this variable; one
    # started elsewhere needs it in its own environment (see the README).
    os.environ.setdefault(PROXY_CALLBACK_VARIABLE, CALLBACK)
    ray.init(
        address=settings.ray_address or "local",  # not a `ray start` cluster found running
        include_dashboard=False,
        logging_level=logging.WARNING,
        **({} if settings.ray_address else {"_node_ip_address": "127.0.0.1"}),
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        http: dict[str, Any] = {"host": settings.host, "port": settings.port}
        if settings.certfile:  # the proxy serves wss:// (the key may be in the certificate file)
            key = settings.keyfile or settings.certfile
            http |= {"ssl_certfile": settings.certfile, "ssl_keyfile": key}
        serve.start(http_options=http, proxy_location="HeadOnly")
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as exc:  # the replicas failed to start: their error is in it
            log.error("whisperwire on Ray Serve did not start: %s", exc)
            return 1
        log.info(
            "whisperwire on Ray Serve: %d replica(s) behind http://%s:%d",
            settings.ray_replicas,
            settings.host,
            settings.port,
        )
        while not stop.wait(1.0):
            pass
        log.info("stopping: the sessions finalise what they received (at most %g s)", FINALISE_S)
        started = time.monotonic()
        serve.delete(APP_NAME)
        log.info("stopped in %.1f s", time.monotonic() - started)
    finally:
        if not settings.ray_address:
            serve.shutdown()
        ray.shutdown()
    return 0
