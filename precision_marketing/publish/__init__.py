"""Publish: the last stage a table passes. `partitions` writes a table's ds partition atomically to the lake
(manifest + _SUCCESS) and lists what is published; `ids` puts the delivered ids back in place of the internal
keys; `catalog` is the SQL view over published partitions that `pm query` and the report read; `consent`
re-checks the latest published audiences against tonight's suppressions when tonight's are not published."""
