"""Customer intelligence: RFM, lifecycle stages and predicted lifetime value (see docs/metrics.md).

`clv`, `rfm` and `lifecycle` are pure NumPy over per-customer columns; `compute` ties them together;
`pipeline_postgres` and `pipeline_generic` read orders and write metrics; the service
`crm.services.metrics.metrics_compute` runs one computation."""
