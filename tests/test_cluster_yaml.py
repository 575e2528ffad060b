"""cluster.yaml is a valid Ray cluster launcher config (checked with Ray's own schema and defaults)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

CLUSTER_YAML = Path(__file__).parent.parent / "cluster.yaml"


def test_cluster_yaml_passes_rays_schema():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CLUSTER_YAML.read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # the file as written
    prepared = prepare_config(config)  # fills Ray's defaults, as `ray up` does
    validate_config(prepared)
    assert prepared["provider"]["type"] == "local"
    assert len(prepared["provider"]["worker_ips"]) == prepared["max_workers"]
    commands = " ".join(prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=disabled" in commands and "--object-store-memory" in commands
    assert "ray stop" not in commands  # it would end every Ray process of the user on the node
    assert any("raydsconv" in command for command in prepared["setup_commands"])
