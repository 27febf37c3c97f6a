"""Example pipelines and the tasks they use (run `runner run pipelines/daily_sales.yaml`)."""
