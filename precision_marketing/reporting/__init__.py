"""Reporting: what people read about a night. `report` builds the run report (metrics, plots, data quality,
time per task) published beside the tables; `campaign_section` its campaign part; `alerts` the failure and
publish-gate notifications."""
