"""The Ray Serve application's settings: what a Serve config file's args mean, what reaches a
replica, what the deployment asks of Ray. Needs Ray installed, no cluster."""

from __future__ import annotations

import pytest
import support

from whisperwire.settings import load_settings

pytestmark = pytest.mark.ray

try:
    from whisperwire import ray_app
except ImportError:
    support.missing("Ray Serve is not installed (pip install 'whisperwire[ray]')", "--ray")


def test_a_config_files_args_are_the_serve_flags_without_dashes() -> None:
    settings = ray_app.settings_from(
        {"model": "tiny.en", "workers": 1, "max-lag": 5, "ray-replicas": 3, "api-key": ["k1"]}
    )
    assert (settings.workers, settings.max_lag_s, settings.ray_replicas) == (1, 5.0, 3)
    assert settings.api_keys == ["k1"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"bogus": 1}, "bogus: not a setting of whisperwire serve"),
        ({"max-lag": -1}, "--max-lag / WHISPERWIRE_MAX_LAG: -1 is out of range"),
        ({"forward-url": "ftp://x/"}, "forwarding: "),
    ],
)
def test_a_bad_arg_is_named(args: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ray_app.app_from(args)


def test_a_replica_gets_the_servers_settings_and_its_secrets() -> None:
    settings = load_settings(api_key=["secret"], ray=True, ray_replicas=4, workers=2)
    given = ray_app.replica_settings(settings)
    assert not any(name.startswith("ray") for name in given)
    again = load_settings(**given)
    assert again.api_keys == ["secret"] and again.workers == 2 and not again.ray


def test_ray_reserves_what_the_flags_say_and_room_for_every_session() -> None:
    settings = load_settings(ray_replicas=3, ray_replica_cpus=2, ray_replica_gpus=0.5)
    deployment = ray_app.deployment(settings)
    assert deployment.num_replicas == 3
    assert deployment.ray_actor_options["num_cpus"] == 2
    assert deployment.ray_actor_options["num_gpus"] == 0.5
    # Open WebSockets count as Ray requests: the replica, not Ray's queue, refuses the extra.
    assert deployment.max_ongoing_requests > settings.max_sessions


def test_the_deployment_routes_by_the_room_its_replicas_report() -> None:
    from ray.serve.request_router import RequestRouter

    from whisperwire.ray_router import STATS_PERIOD_S, RoomRouter

    config = ray_app.deployment(load_settings())._deployment_config.request_router_config
    module, name = config.request_router_class.split(":")
    assert (module, name) == (RoomRouter.__module__, RoomRouter.__name__)
    assert issubclass(RoomRouter, RequestRouter)
    assert config.request_routing_stats_period_s == STATS_PERIOD_S


def test_a_model_deployment_takes_the_gpus_and_the_app_replicas_none() -> None:
    settings = load_settings(
        ray_replicas=2, ray_replica_cpus=0.5, ray_model_replicas=1, ray_model_cpus=3,
        ray_replica_gpus=1,
    )  # fmt: skip
    model = ray_app.model_deployment(settings)
    assert model.num_replicas == 1
    assert model.ray_actor_options["num_cpus"] == 3 and model.ray_actor_options["num_gpus"] == 1
    app = ray_app.deployment(settings)
    assert app.ray_actor_options["num_cpus"] == 0.5 and app.ray_actor_options["num_gpus"] == 0
    alone = ray_app.deployment(load_settings(ray_replica_gpus=1))  # each replica its own model
    assert alone.ray_actor_options["num_gpus"] == 1
