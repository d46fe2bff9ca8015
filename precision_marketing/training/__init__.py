"""Training: the models of the night. The Spark jobs themselves live in spark_jobs/ (each runnable on its own);
`spark_submit` runs them on the configured master with the driver's Python; `segmentation` clusters users into
named segments in-process with scikit-learn."""
