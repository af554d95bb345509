"""Chat over the rows of a table in a distributed engine's workers: the per-batch function behind
:func:`azureml_chat.ray.map_chat`, and the Spark recipe.

::

    from azureml_chat.rows import ChatRows, spark_schema

    rows = ChatRows(endpoint_url=url, api_key=key, chat_options={"max_tokens": 64})
    answers = df.mapInPandas(rows.map_in_pandas, schema=spark_schema(df.schema))

See ``docs/scale-out.md``. Importing this module imports neither ray, pandas nor pyspark.
"""

from ._rows import OUTPUT_COLUMNS, OUTPUT_TYPES, PER_WORKER_CONCURRENCY, ChatRows, WorkerOptions, spark_schema

__all__ = [
    "OUTPUT_COLUMNS",
    "OUTPUT_TYPES",
    "PER_WORKER_CONCURRENCY",
    "ChatRows",
    "WorkerOptions",
    "spark_schema",
]
