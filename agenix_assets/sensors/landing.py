"""Landing-zone sensor: start ingestion for exactly the sources whose files changed (seed step 2.1).

The cursor maps each source to a fingerprint of its files' names, sizes and mtimes, so a tick reads no
file contents and the warehouse is never opened here. The first tick records a baseline and starts no
run: the initial load is the demo's materialization or the nightly schedule. A run key per fingerprint
means the same change never starts two runs.
"""

from __future__ import annotations

import json

import dagster as dg

from ..core.config import ConfigError
from ..core.sources import SourceError, source_fingerprint
from ..resources.platform import AgenixResource

LANDING_SENSOR = "landing_zone_sensor"


def ingest_job_name(source_name: str) -> str:
    return f"ingest_{source_name}"


def build_landing_sensor(jobs: list[dg.UnresolvedAssetJobDefinition], source_names: list[str]) -> dg.SensorDefinition:
    known = set(source_names)

    @dg.sensor(
        name=LANDING_SENSOR,
        jobs=jobs,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts ingest_<source> for each source whose files in the landing zone changed.",
    )
    def landing_zone_sensor(context: dg.SensorEvaluationContext, agenix: AgenixResource):
        try:
            config = agenix.load_config()
        except ConfigError as exc:
            return dg.SkipReason(f"configuration invalid, not watching: {exc}")
        first_tick = context.cursor is None
        previous: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        current: dict[str, str] = {}
        requests, skipped = [], []
        for source in config.sources:
            if source.name not in known:
                # Added to sources.yaml after this code location loaded: reload the location to pick it up.
                skipped.append(f"{source.name}: not in the loaded definitions")
                continue
            try:
                fingerprint = source_fingerprint(source, agenix.paths.landing)
            except SourceError as exc:
                skipped.append(str(exc))
                if source.name in previous:
                    current[source.name] = previous[source.name]
                continue
            current[source.name] = fingerprint
            if not first_tick and previous.get(source.name) != fingerprint:
                requests.append(
                    dg.RunRequest(
                        run_key=f"{source.name}:{fingerprint}",
                        job_name=ingest_job_name(source.name),
                        tags={"agenix/source": source.name, "agenix/trigger": "landing_zone"},
                    )
                )
        context.update_cursor(json.dumps(current, sort_keys=True))
        if requests:
            return requests
        reason = "baseline recorded" if first_tick else "no source changed"
        return dg.SkipReason(reason + (f"; skipped: {'; '.join(skipped)}" if skipped else ""))

    return landing_zone_sensor
