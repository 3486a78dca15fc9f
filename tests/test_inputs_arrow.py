"""Parquet files, Arrow tables and pandas DataFrames as inputs of create, upsert and save.

They must load exactly what the same records load from JSON Lines (the same
conversion, the same rejects, named by their row), resume exactly from a
checkpoint, and read pandas' missing values as NULL. pyarrow and pandas come
with the ``test`` extra: a missing one fails this module instead of skipping it.
"""

from __future__ import annotations

import datetime
import json
import sys
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import one_line_error
from django.utils import timezone
from testproject.testapp.models import Event, Item, Person, Product, Sample, SaveLog, Signalled

import bulkpar
from bulkpar.errors import CheckpointMismatchError, InputError, MissingDependencyError
from bulkpar.inputs.sources import as_source

SETTINGS = ("--settings", "testproject.settings")
UTC = datetime.UTC
PERSON = (*SETTINGS, "--model", "testapp.Person")


# -- the same records as JSON Lines and as Parquet / Arrow / pandas ------------------------

SAMPLE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("label", pa.string()),
        ("note", pa.string()),
        ("price", pa.decimal128(12, 4)),
        ("data", pa.struct([("a", pa.int64()), ("b", pa.list_(pa.string()))])),
        ("tags", pa.list_(pa.string())),
        ("at", pa.timestamp("us", tz="UTC")),
        ("Version", pa.int32()),
    ]
)


def sample_rows(n=23):
    """Typed records for Sample: nulls, exact decimals, nested JSON, aware datetimes."""
    rows = []
    for i in range(n):
        rows.append(
            {
                "key": f"k{i:02d}",
                "label": f"label {i}",
                "note": None if i % 3 == 0 else f"note {i}",
                "price": None if i % 5 == 0 else Decimal(f"{i}12345.{i % 10}001"),
                "data": None if i % 4 == 0 else {"a": i, "b": [f"x{i}", "y"]},
                "tags": [f"t{i}"] * (i % 3),
                "at": None
                if i % 7 == 0
                else datetime.datetime(2024, 1, 1 + i, 12, 30, i, tzinfo=UTC),
                "Version": i * 1000,
            }
        )
    return rows


def as_json_line(row):
    """A record as JSON Lines writes it: decimals as exact strings, datetimes in ISO 8601."""
    out = dict(row)
    if row["price"] is not None:
        out["price"] = str(row["price"])
    if row["at"] is not None:
        out["at"] = row["at"].isoformat()
    return out


def sample_table_contents():
    """Every column of every Sample row but the random ``ref`` and the ``touched`` clock."""
    fields = [
        f.attname for f in Sample._meta.concrete_fields if f.name not in ("id", "ref", "touched")
    ]
    return sorted(Sample.objects.values_list(*fields), key=lambda row: row[0])


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(as_json_line(row)) + "\n" for row in rows))
    return path


def write_parquet(path, rows, schema=None, **options):
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, **options)
    return path


def sample_frame(rows):
    frame = pd.DataFrame(rows)
    frame["at"] = pd.to_datetime(frame["at"], utc=True)  # a datetime64[us, UTC] column with NaT
    return frame


KINDS = ["parquet", "table", "reader", "dataframe"]


def as_input(kind, rows, tmp_path):
    """The rows as an input of ``kind``; a Parquet file in small row groups, read across them."""
    table = pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)
    if kind == "parquet":
        return str(
            write_parquet(tmp_path / "samples.parquet", rows, SAMPLE_SCHEMA, row_group_size=5)
        )
    if kind == "table":
        return table
    if kind == "reader":
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=4))
    return sample_frame(rows)


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_rows_as_from_json_lines(db, tmp_path, load_method, kind):
    rows = sample_rows()
    reference = bulkpar.create(
        Sample, str(write_jsonl(tmp_path / "s.jsonl", rows)), chunk=7, workers=2, method=load_method
    )
    assert (reference.created, reference.rejected, reference.input_rows) == (23, 0, 23)
    expected = sample_table_contents()
    assert expected[1][:5] == (
        "k01",
        "label 1",
        "note 1",
        Decimal("112345.1001"),
        {"a": 1, "b": ["x1", "y"]},
    )
    assert expected[0][2:5] == (None, None, None)  # SQL NULLs, not JSON null
    Sample.objects.all().delete()

    report = bulkpar.create(
        Sample, as_input(kind, rows, tmp_path), chunk=7, workers=2, method=load_method
    )
    assert (report.created, report.rejected, report.input_rows) == (23, 0, 23), report.errors
    assert report.chunks == reference.chunks
    assert sample_table_contents() == expected
    assert Sample.objects.filter(data__isnull=True).count() == 6  # SQL NULL, as from JSON null


def test_the_same_rows_through_the_cli_with_a_parquet_suffix_and_with_format(db, tmp_path, run_cli):
    rows = sample_rows(12)
    jsonl = write_jsonl(tmp_path / "s.jsonl", rows)
    common = ("--model", "testapp.Sample", "--chunk", "5", "--workers", "2", "--json")
    result = run_cli("create", *SETTINGS, *common, "--input", jsonl)
    assert result.returncode == 0, result.stderr
    expected = sample_table_contents()
    for name, extra in [("s.pq", ()), ("s.data", ("--format", "parquet"))]:
        Sample.objects.all().delete()
        path = write_parquet(tmp_path / name, rows, SAMPLE_SCHEMA)
        result = run_cli("upsert", *SETTINGS, *common, "--input", path, "--unique", "key", *extra)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert (report["input_rows"], report["created"], report["rejected"]) == (12, 12, 0)
        assert sample_table_contents() == expected


def test_save_input_reads_parquet(db, tmp_path, run_cli):
    Signalled.objects.create(name="s1", value=-1)
    SaveLog.objects.all().delete()
    path = write_parquet(tmp_path / "s.parquet", [{"name": f"s{i}", "value": i} for i in range(6)])
    result = run_cli("save", *SETTINGS, "--model", "testapp.Signalled", "--input", path,
                     "--match", "name", "--workers", "2", "--chunk", "2", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["created"], report["updated"]) == (5, 1)
    assert dict(Signalled.objects.values_list("name", "derived")) == {
        f"s{i}": f"s{i}:{i}" for i in range(6)
    }
    assert SaveLog.objects.count() == 6  # save() ran, and its signal fired, once per row


# -- rejects name their row ------------------------------------------------------------------


def test_rejects_name_the_row_in_the_report_and_the_reject_file(db, tmp_path, run_cli):
    rows = [{"sku": f"p{i}", "price": Decimal(f"{i}.500"), "stock": i} for i in range(1, 11)]
    rows[2]["price"] = Decimal("3.125")  # row 3: three places where the column holds two
    rows[5]["price"] = None  # row 6: NOT NULL, no default
    rows[7]["sku"] = "x" * 33  # row 8: longer than max_length
    schema = pa.schema(
        [("sku", pa.string()), ("price", pa.decimal128(8, 3)), ("stock", pa.int64())]
    )
    path = write_parquet(tmp_path / "products.parquet", rows, schema, row_group_size=3)
    rejects = tmp_path / "rejects.jsonl"
    result = run_cli("create", *SETTINGS, "--model", "testapp.Product", "--input", path,
                     "--chunk", "4", "--workers", "2", "--rejects", rejects, "--json")  # fmt: skip
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert (report["input_rows"], report["created"], report["rejected"]) == (10, 7, 3)
    lines = sorted((json.loads(line) for line in rejects.read_text().splitlines()),
                   key=lambda r: r["line"])  # fmt: skip
    assert [(r["line"], r["field"]) for r in lines] == [(3, "price"), (6, "price"), (8, "sku")]
    assert lines[0]["row"] == {"sku": "p3", "price": "3.125", "stock": 3}
    assert "decimal places" in lines[0]["error"] and "cannot be null" in lines[1]["error"]
    assert dict(Product.objects.values_list("sku", "price")) == {
        f"p{i}": Decimal(f"{i}.50") for i in (1, 2, 4, 5, 7, 9, 10)
    }


@pytest.mark.parametrize("kind", KINDS)
def test_rejects_are_numbered_across_batches(db, tmp_path, monkeypatch, kind):
    from bulkpar.inputs import arrow, dataframes

    monkeypatch.setattr(arrow, "BATCH_ROWS", 4)
    monkeypatch.setattr(dataframes, "BATCH_ROWS", 4)
    rows = sample_rows(15)
    for i in (5, 9, 14):  # rows 6, 10 and 15: a label longer than its 40 characters
        rows[i]["label"] = "y" * 41
    rejects = tmp_path / "rejects.jsonl"
    report = bulkpar.create(
        Sample, as_input(kind, rows, tmp_path), chunk=6, workers=2, rejects=str(rejects)
    )
    assert (report.created, report.rejected, report.input_rows) == (12, 3, 15)
    assert [(r.line, r.field) for r in report.reject_samples] == [
        (6, "label"), (10, "label"), (15, "label"),
    ]  # fmt: skip
    lines = sorted(json.loads(line)["line"] for line in rejects.read_text().splitlines())
    assert lines == [6, 10, 15]
    assert sorted(Sample.objects.values_list("key", flat=True)) == [
        f"k{i:02d}" for i in range(15) if i not in (5, 9, 14)
    ]


def test_dataframe_rejects_name_the_position_not_the_index(db):
    frame = pd.DataFrame(
        {"username": ["a", "b", "c", "d"], "score": [1, 2, 3, 4]}, index=[40, 30, 20, 10]
    )
    frame.loc[20, "username"] = "x" * 151
    report = bulkpar.create(Person, frame, executor="serial")
    assert (report.created, report.rejected) == (3, 1)
    assert [(r.line, r.field) for r in report.reject_samples] == [(3, "username")]
    assert sorted(Person.objects.values_list("username", "score")) == [("a", 1), ("b", 2), ("d", 4)]


# -- checkpoints ------------------------------------------------------------------------------


def people_parquet(path, n, score=lambda i: i):
    return write_parquet(path, [{"username": f"u{i}", "score": score(i)} for i in range(n)])


def test_a_stopped_parquet_load_resumes_exactly(db, tmp_path):
    path = str(people_parquet(tmp_path / "people.parquet", 30))
    Person.objects.create(username="u13", score=-1)  # its chunk fails: the run stops there
    journal = str(tmp_path / "job.ck")
    options = dict(chunk=4, workers=2, checkpoint=journal)
    first = bulkpar.create(Person, path, **options)
    assert not first.ok and first.failed_chunks == 1 and first.reconciles
    committed = first.created
    assert 0 < committed < 30
    Person.objects.filter(username="u13").delete()

    second = bulkpar.create(Person, path, **options)
    assert second.ok, second.errors
    assert second.resumed_rows == committed and second.resumed_chunks == first.chunks
    assert second.created == second.input_rows == 30 - committed
    assert second.reconciles
    assert sorted(Person.objects.values_list("username", "score")) == sorted(
        (f"u{i}", i) for i in range(30)
    )
    third = bulkpar.create(Person, path, **options)  # all done: nothing written twice
    assert (third.resumed_rows, third.input_rows, third.created) == (30, 0, 0)


def test_a_parquet_file_changed_in_place_is_refused(db, run_cli, tmp_path):
    path = people_parquet(tmp_path / "people.parquet", 10)
    journal = tmp_path / "job.ck"
    first = run_cli(
        "create", *PERSON, "--input", path, "--chunk", "3", "--checkpoint", journal, "-q"
    )
    assert first.returncode == 0, first.stderr
    people_parquet(path, 10, score=lambda i: 99 if i == 7 else i)  # the same shape, one value
    result = run_cli("create", *PERSON, "--input", path, "--chunk", "3", "--checkpoint", journal)
    one_line_error(result, 1, f"of {path} differs from the run that committed it")
    assert Person.objects.get(username="u7").score == 7
    # the same content written anew (a fresh export) still resumes: nothing to do
    people_parquet(path, 10)
    again = run_cli("create", *PERSON, "--input", path, "--chunk", "3", "--checkpoint", journal,
                    "--json")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (json.loads(again.stdout)["resumed_rows"], json.loads(again.stdout)["input_rows"]) == (
        10,
        0,
    )
    assert Person.objects.count() == 10


def test_a_dataframe_resumes_like_an_iterable(db, tmp_path):
    frame = pd.DataFrame({"username": [f"u{i}" for i in range(12)], "score": range(12)})
    Person.objects.create(username="u4")
    journal = str(tmp_path / "job.ck")
    options = dict(chunk=3, workers=2, checkpoint=journal)
    first = bulkpar.create(Person, frame, **options)
    assert first.failed_chunks == 1
    Person.objects.filter(username="u4").delete()
    changed = frame.assign(score=[100 + i for i in range(12)])
    with pytest.raises(CheckpointMismatchError, match="of the DataFrame differs from the run"):
        bulkpar.create(Person, changed, **options)
    assert not Person.objects.filter(score__gte=100).exists()
    second = bulkpar.create(Person, frame, **options)
    assert second.ok and second.created == 12 - first.created == second.input_rows
    assert sorted(Person.objects.values_list("score", flat=True)) == list(range(12))


# -- values ------------------------------------------------------------------------------------


def test_dataframe_nan_nat_and_na_are_null(db):
    frame = pd.DataFrame(
        {
            "name": ["a", "b", "c", "d"],
            "weight": [1.5, np.nan, 2.5, np.nan],  # float64: NaN is missing
            "qty": pd.array([1, None, 3, None], dtype="Int64"),  # pd.NA: the default (0)
        }
    )
    report = bulkpar.create(Item, frame, workers=2, chunk=2)
    assert (report.created, report.rejected) == (4, 0)
    assert sorted(Item.objects.values_list("name", "weight", "qty")) == [
        ("a", 1.5, 1), ("b", None, 0), ("c", 2.5, 3), ("d", None, 0),
    ]  # fmt: skip
    assert Item.objects.filter(weight__isnull=True).count() == 2  # NULL, never a stored NaN

    rows = sample_rows(6)
    frame = sample_frame(rows)
    frame["note"] = frame["note"].astype("string")  # missing is pd.NA
    frame["price"] = [float(p) if p is not None else np.nan for p in frame["price"]]
    assert frame["at"].isna().sum() == 1 and frame["price"].isna().sum() == 2
    read = [record.values["at"] for record in as_source(frame)]
    assert {type(value) for value in read} == {datetime.datetime, type(None)}
    report = bulkpar.create(Sample, frame, executor="serial")
    assert (report.created, report.rejected) == (6, 0), report.reject_samples
    got = {s.key: (s.note, s.price, s.at) for s in Sample.objects.all()}
    assert got["k00"] == (None, None, None)
    assert got["k03"] == (None, Decimal("312345.3001"), rows[3]["at"])
    assert got["k05"][1] is None and got["k01"][0] == "note 1"


@pytest.mark.parametrize(
    ("decimal_type", "too_precise"),
    [
        (pa.decimal128(38, 20), "1.00001"),  # five places where the column holds four
        (pa.decimal256(40, 4), "123456789.0001"),  # thirteen digits where it holds twelve
    ],
)
def test_decimals_are_exact(db, decimal_type, too_precise):
    values = ["99999999.9999", "0.0001", "-12345678.1234", "1.1000"]
    prices = pa.array([Decimal(v) for v in [*values, too_precise]], decimal_type)
    table = pa.table({"key": [f"d{i}" for i in range(5)], "price": prices})
    report = bulkpar.create(Sample, table, executor="serial")
    assert (report.created, report.rejected) == (4, 1)  # rejected, never rounded
    assert [(r.line, r.field) for r in report.reject_samples] == [(5, "price")]
    assert dict(Sample.objects.values_list("key", "price")) == {
        f"d{i}": Decimal(v) for i, v in enumerate(values)
    }
    Sample.objects.all().delete()
    frame = pd.DataFrame({"key": ["f0"], "price": [Decimal("12345678.1234")]})
    assert bulkpar.create(Sample, frame, executor="serial").created == 1
    assert Sample.objects.get().price == Decimal("12345678.1234")


def test_timestamps_with_and_without_time_zone(db, tmp_path):
    paris = datetime.datetime(2024, 5, 1, 9, 30, 15, 123456)
    table = pa.table(
        {
            "organization_id": [1, 1, 1],
            "external_id": ["paris", "nanos", "none"],
            "name": ["a", "b", "c"],
            "started": pa.array(
                [
                    pd.Timestamp(paris, tz="Europe/Paris").value,
                    pd.Timestamp("2024-05-01 07:30:15.123456789", tz="UTC").value,
                    None,
                ],
                pa.timestamp("ns", tz="Europe/Paris"),
            ),
        }
    )
    path = tmp_path / "e.parquet"
    pq.write_table(table, path)
    # plain datetimes, not pandas Timestamps: workers need neither pandas nor pyarrow
    read = [record.values["started"] for record in as_source(str(path))]
    assert [type(value) for value in read] == [datetime.datetime, datetime.datetime, type(None)]
    report = bulkpar.create(Event, str(path), workers=2)
    assert report.created == 3
    started = dict(Event.objects.values_list("external_id", "started"))
    assert started == {
        "paris": datetime.datetime(2024, 5, 1, 7, 30, 15, 123456, tzinfo=UTC),
        "nanos": datetime.datetime(2024, 5, 1, 7, 30, 15, 123456, tzinfo=UTC),  # truncated
        "none": None,
    }


def test_a_naive_timestamp_reads_like_a_naive_json_datetime(db):
    naive = datetime.datetime(2024, 5, 1, 0, 0)
    table = pa.table(
        {"organization_id": [1], "external_id": ["arrow"], "name": ["a"],
         "started": pa.array([naive], pa.timestamp("us"))}
    )  # fmt: skip
    rows = [
        {"organization_id": 1, "external_id": "json", "name": "j", "started": naive.isoformat()}
    ]
    with timezone.override("Asia/Tokyo"):  # the serial executor converts in this thread
        assert bulkpar.create(Event, table, executor="serial").created == 1
        assert bulkpar.create(Event, rows, executor="serial").created == 1
    started = dict(Event.objects.values_list("external_id", "started"))
    assert started["arrow"] == started["json"] == datetime.datetime(2024, 4, 30, 15, tzinfo=UTC)


def test_maps_structs_and_lists_become_json(db):
    table = pa.table(
        {
            "sku": ["m", "s", "l", "n"],
            "price": pa.array([Decimal(1)] * 4, pa.decimal128(4, 2)),
            "data": pa.array(
                [[("k", [1, 2])], [("nested", [])], [], None],
                pa.map_(pa.string(), pa.list_(pa.int64())),
            ),
        }
    )
    assert bulkpar.create(Product, table, executor="serial").created == 4
    assert dict(Product.objects.values_list("sku", "data")) == {
        "m": {"k": [1, 2]}, "s": {"nested": []}, "l": {}, "n": None,
    }  # fmt: skip


# -- upsert counts -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["parquet", "dataframe"])
def test_upsert_created_updated_unchanged(db, tmp_path, load_method, kind):
    Event.objects.bulk_create(
        Event(organization_id=1, external_id=f"e{i}", name=f"n{i}") for i in range(10)
    )
    # e5..e7 unchanged, e8 and e9 renamed, e10..e14 new
    rows = [
        {"organization_id": 1, "external_id": f"e{i}", "name": f"n{i}" if i < 8 else f"N{i}"}
        for i in range(5, 15)
    ]
    source = (
        str(write_parquet(tmp_path / "e.parquet", rows))
        if kind == "parquet"
        else pd.DataFrame(rows)
    )
    report = bulkpar.upsert(
        Event, source, unique="organization_id,external_id", chunk=3, workers=2, method=load_method
    )
    assert (report.created, report.updated, report.unchanged) == (5, 2, 3)
    assert report.input_rows == 10 and report.reconciles
    assert dict(Event.objects.values_list("external_id", "name")) == {
        f"e{i}": f"n{i}" if i < 8 else f"N{i}" for i in range(15)
    }


# -- refusals, each one line ------------------------------------------------------------------


def test_without_pyarrow_the_error_names_the_extra(db, tmp_path, monkeypatch):
    path = people_parquet(tmp_path / "people.parquet", 3)
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    with pytest.raises(MissingDependencyError) as failure:
        bulkpar.create(Person, str(path))
    message = str(failure.value)
    assert "needs pyarrow" in message and "pip install 'bulkpar[parquet]'" in message
    assert "\n" not in message
    assert Person.objects.count() == 0
    # JSON Lines and iterables do not need it
    assert bulkpar.create(Person, [{"username": "a"}], executor="serial").created == 1


def test_parquet_from_stdin_is_refused(db, run_cli, tmp_path):
    data = people_parquet(tmp_path / "p.parquet", 2).read_bytes()
    result = run_cli("create", *PERSON, "--input", "-", "--format", "parquet",
                     input=data.decode("latin-1"))  # fmt: skip
    one_line_error(result, 2, "Parquet cannot be read from stdin", "seekable file")
    assert Person.objects.count() == 0


def test_a_file_that_is_not_parquet(db, run_cli, tmp_path):
    path = tmp_path / "people.parquet"
    path.write_text('{"username": "ann"}\n')
    one_line_error(
        run_cli("create", *PERSON, "--input", path), 1,
        f"{path} is not a readable Parquet file", "--format csv|jsonl|json",
    )  # fmt: skip
    one_line_error(
        run_cli("create", *PERSON, "--input", path, "--delimiter", ";"), 2,
        "--delimiter goes with CSV input",
    )  # fmt: skip
    empty = write_parquet(tmp_path / "empty.parquet", [], pa.schema([("username", pa.string())]))
    one_line_error(run_cli("create", *PERSON, "--input", empty), 1, "holds no records")
    assert Person.objects.count() == 0


def test_repeated_and_unnamed_columns_are_refused(db):
    table = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["username", "username"])
    with pytest.raises(InputError, match="more than one column named 'username'"):
        bulkpar.create(Person, table)
    with pytest.raises(InputError, match=r"column\(s\) 0 not named by a string"):
        bulkpar.create(Person, pd.DataFrame([["a"]]))
    assert Person.objects.count() == 0


def test_a_value_without_a_python_equivalent_names_its_row(db):
    table = pa.table({"username": ["a", "b"], "nickname": pa.array([0, 2**62], pa.timestamp("s"))})
    with pytest.raises(InputError, match=r"the Arrow table, row 2, column 'nickname'"):
        bulkpar.create(Person, table)
    assert Person.objects.count() == 0


def test_a_big_parquet_file_is_read_batch_by_batch(db, tmp_path, monkeypatch):
    from bulkpar.inputs import arrow

    monkeypatch.setattr(arrow, "BATCH_ROWS", 100)
    read = []
    real = arrow.records_from_columns

    def counted(names, columns, first_line, source):
        read.append(len(columns[0]))
        return real(names, columns, first_line, source)

    monkeypatch.setattr(arrow, "records_from_columns", counted)
    path = people_parquet(tmp_path / "people.parquet", 1000)
    report = bulkpar.create(Person, str(path), chunk=250, workers=2)
    assert report.created == 1000 and Person.objects.count() == 1000
    assert read == [100] * 10  # ten batches of 100 rows, never the whole file
