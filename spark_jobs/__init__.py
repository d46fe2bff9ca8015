"""spark-submit-able PySpark jobs (ALS recommendations, CTR audiences); each file runs on its own."""
