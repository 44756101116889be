"""The BentoCloud deployment configs parse as BentoML's own deployment schema and name the
real services. (Deploying needs a BentoCloud account; this checks everything before that.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "bentocloud").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_matches_bentomls_schema_and_service_names(path: Path) -> None:
    from bentoml._internal.cloud.schemas.schemasv2 import DeploymentConfigSchema
    from bentoml._internal.utils.cattr import bentoml_cattr

    config = yaml.safe_load(path.read_text())
    parsed = bentoml_cattr.structure({k: v for k, v in config.items() if k != "name"}, DeploymentConfigSchema)
    services = {"plate-reader.yaml": "plate-reader", "autocomplete.yaml": "autocomplete"}
    assert list(parsed.services) == [services[path.name]]
    [service] = parsed.services.values()
    assert service.scaling.min_replicas >= 1 and service.scaling.max_replicas >= service.scaling.min_replicas


def test_service_names_match_the_bentoml_services() -> None:
    # Read from the source: importing the autocompleter's service needs its model in the store.
    repo = CONFIGS[0].parents[2]
    assert 'name="plate-reader"' in (repo / "services/plate_reader/service.py").read_text()
    assert 'name="autocomplete"' in (repo / "services/autocomplete/service.py").read_text()
    assert [p.name for p in CONFIGS] == ["autocomplete.yaml", "plate-reader.yaml"]
