"""The Dask graph: inputs → per-track tasks → Parquet parts."""

from mirflow.pipeline.config import (
    PipelineConfig,
    available_pipelines,
    load_pipeline,
    parse_pipeline,
)

__all__ = ["PipelineConfig", "available_pipelines", "load_pipeline", "parse_pipeline"]
