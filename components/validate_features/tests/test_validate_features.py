import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.validate_features.component import validate_features


@pytest.mark.integration
def test_good_features_pass(tiny_dataset, params_path, artifact):
    report = artifact("HTML", "features")
    assert validate_features.python_func(str(tiny_dataset), str(params_path), report) == str(tiny_dataset)


@pytest.mark.integration
def test_nan_vector_stops_the_run(tiny_dataset, params_path, artifact, tmp_path):
    broken = shutil.copytree(tiny_dataset, tmp_path / "broken")
    table = pq.read_table(broken / "music_features.parquet")
    vectors = table.column("audio_embedding").to_pylist()
    vectors[3] = [np.nan] * len(vectors[3])
    bad_id = table.column("music_id")[3].as_py()
    index = table.schema.get_field_index("audio_embedding")
    table = table.set_column(index, "audio_embedding", pa.array(vectors, table.schema.field(index).type))
    pq.write_table(table, broken / "music_features.parquet")
    with pytest.raises(Exception, match=bad_id):
        validate_features.python_func(str(broken), str(params_path), artifact("HTML", "features"))
