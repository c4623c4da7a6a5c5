"""Reports: read runs back from MLflow, lay them out, gate CI on them."""
