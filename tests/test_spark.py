"""The Spark recipe: ``ChatRows.map_in_pandas`` from ``DataFrame.mapInPandas`` on a local Spark session
(``local[2]``, bound to 127.0.0.1, no UI), against an emulator served from a thread of this process.

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from azureml_chat.emulator import Emulator
from azureml_chat.rows import OUTPUT_COLUMNS, ChatRows, spark_schema
from azureml_chat.testing import fast_retry

# PySpark 4.x warns that it "does not yet fully support pandas >= 3.0.0" whenever it converts (the venv has
# pandas 3); the conversion this recipe uses (strings, longs, doubles) is what the test checks.
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")

KEY = "spark-key"


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """A local Spark session with two cores, on 127.0.0.1 only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        patch.setenv("PYSPARK_PYTHON", sys.executable)  # the workers import azureml_chat from this venv
        session = (
            SparkSession.builder.master("local[2]")
            .appName("azureml-chat-tests")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", "8")
            .getOrCreate()
        )
        try:
            yield session
        finally:
            session.stop()


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    served = Emulator(key=KEY)
    with served.start_in_thread():
        yield served


def test_map_in_pandas_answers_every_row_with_the_schema_helper(
    spark: SparkSession, emulator: Emulator
) -> None:
    """Each row comes back once with its answer or its error, in the schema spark_schema() gives."""
    prompts = [(i, json.dumps([{"role": "user", "content": f"q{i}"}])) for i in range(30)]
    prompts[4] = (4, "not json")
    df = spark.createDataFrame(prompts, "id long, messages string").repartition(3)
    rows = ChatRows(endpoint_url=emulator.chat_url, api_key=KEY, retry=fast_retry())
    answers = df.mapInPandas(rows.map_in_pandas, schema=spark_schema(df.schema))
    assert ["id", "messages", *OUTPUT_COLUMNS] == answers.columns
    got = {row["id"]: row for row in answers.collect()}
    assert list(range(30)) == sorted(got)
    assert "InvalidRequestError" == got[4]["error_type"]
    assert [f"You said: q{i}" for i in range(30) if i != 4] == [
        got[i]["content"] for i in range(30) if i != 4
    ]
    assert all(got[i]["attempts"] == 1 and got[i]["error"] is None for i in range(30) if i != 4)
    assert 29 == len(emulator.requests)
