"""Unit tests of the operations' specs: every ``validate()`` rule, once, without a write.

The API functions and the CLI commands both build these specs, so each rule
here is the one a user meets through either. ``validate()`` builds the job
but plans and writes nothing: every test ends with the tables still empty.
"""

from __future__ import annotations

import pytest
from testproject.testapp.models import Event, Person, Restaurant

from bulkpar.errors import InputError, UsageError
from bulkpar.operations.load import LoadMode, LoadSpec
from bulkpar.operations.options import RunSpec
from bulkpar.operations.save import SaveSpec
from bulkpar.operations.update import UpdateJob, UpdateSpec

SERIAL = RunSpec(executor="serial")


def refused(spec, *phrases):
    """``spec.validate()`` raises one one-line UsageError holding every phrase."""
    with pytest.raises(UsageError) as caught:
        spec.validate()
    message = str(caught.value)
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, message
    assert Person.objects.count() == 0 and Event.objects.count() == 0
    return message


# -- the shared run options ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "phrase"),
    [
        ({"chunk": 0}, "chunk must be at least 1 (got 0)"),
        ({"workers": 0}, "workers must be at least 1 (got 0)"),
        ({"executor": "rocket"}, "unknown executor 'rocket'"),
        ({"start_method": "teleport"}, "unknown start method 'teleport'"),
        ({"retries": -1}, "retries must be 0 or more"),
        ({"on_error": "ignore"}, "on_error must be 'abort', 'skip' or 'bisect'"),
        ({"max_rejects": -1}, "max_rejects must be 0 or more"),
        ({"dry_run": True, "checkpoint": "x.ck"}, "takes no --checkpoint"),
    ],
)
def test_run_options_are_checked_once_for_every_operation(db, options, phrase):
    run = RunSpec(**options)
    with pytest.raises(UsageError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        run.validate()
    # the same check, reached through each operation's spec
    refused(UpdateSpec(Person, set={"score": 1}, run=run), phrase)
    refused(LoadSpec(Person, [{"username": "a"}], run=run), phrase)
    refused(SaveSpec(Person, run=run), phrase)


def test_run_options_resolve_workers_and_pass_through(db):
    options = RunSpec(workers=3, retries=0, on_error="bisect", max_rejects=2).validate()
    assert (options.workers, options.retries, options.on_error, options.max_rejects) == (
        3,
        0,
        "bisect",
        2,
    )
    assert RunSpec().validate().workers >= 1


# -- update ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "phrase"),
    [
        ({}, "give either --set FIELD=VALUE or --func MODULE:CALLABLE"),
        ({"set": {"score": 1}, "func": "testproject.testapp.transforms:noop"}, "give either --set"),
        ({"set": {"score": 1}, "fields": "score"}, "--fields goes with --func"),
        ({"func": "testproject.testapp.transforms:noop", "fields": " , "}, "--fields is empty"),
        ({"set": {}}, "set is empty"),
        ({"set": {"id": 5}}, "set cannot change the primary key 'id'"),
        ({"set": {"scroe": 1}}, "unknown field 'scroe'"),
        (
            {"func": "testproject.testapp.transforms:noop", "fields": "scor"},
            "unknown field 'scor' in fields",
        ),
        ({"set": {"score": "abc"}}, "--set score=abc: “abc” value must be an integer"),
    ],
)
def test_update_rules(db, options, phrase):
    refused(UpdateSpec(Person, run=SERIAL, **options), phrase)


def test_update_refuses_sliced_and_values_querysets(db):
    refused(UpdateSpec(Person.objects.all()[:5], set={"score": 1}), "sliced querysets")
    refused(UpdateSpec(Person.objects.values("id"), set={"score": 1}), ".values()")


def test_update_spec_becomes_its_job_and_fingerprint(db):
    checked = UpdateSpec(
        Person.objects.filter(active=True), set={"score": 1}, run=RunSpec(chunk=7, workers=2)
    ).validate()
    assert isinstance(checked.job, UpdateJob)
    assert (checked.job.chunk, checked.job.assignments) == (7, (("score", 1),))
    assert checked.fingerprint["operation"] == "update"
    assert checked.fingerprint["chunk"] == 7
    assert checked.options.workers == 2


# -- create / upsert -------------------------------------------------------------------


def test_load_mode_is_decided_once():
    assert LoadMode.of("create") is LoadMode.CREATE
    assert LoadMode.of("create", ignore_conflicts=True) is LoadMode.CREATE_IGNORE
    assert LoadMode.of("upsert") is LoadMode.UPSERT
    with pytest.raises(UsageError, match="takes no ignore_conflicts"):
        LoadMode.of("upsert", ignore_conflicts=True)
    assert [m.operation for m in LoadMode] == ["create", "create", "upsert"]


EVENT = {"organization_id": 1, "external_id": "a", "name": "n"}


@pytest.mark.parametrize(
    ("options", "phrase"),
    [
        ({"unique": None}, "upsert needs --unique"),
        ({"unique": "name"}, "no unique constraint of testapp.Event covers exactly (name)"),
        ({"unique": "organization_id,extrenal_id"}, "unknown field 'extrenal_id'"),
        (
            {"unique": "organization_id,external_id", "update": "external_id"},
            "--update names unique field(s) external_id",
        ),
        (
            {"unique": "organization_id,external_id", "update": "id"},
            "--update names the primary key 'id'",
        ),
        (
            {"unique": "organization_id,external_id", "update": "started"},
            "--update names started, which the input",
        ),
    ],
)
def test_upsert_key_policy(db, options, phrase):
    refused(LoadSpec(Event, [EVENT], mode=LoadMode.UPSERT, run=SERIAL, **options), phrase)


def test_upsert_needs_the_key_in_the_input(db):
    refused(
        LoadSpec(Event, [{"external_id": "a", "name": "n"}], mode=LoadMode.UPSERT,
                 unique="organization_id,external_id", run=SERIAL),
        "has no column for unique field(s) organization_id",
    )  # fmt: skip


def test_upsert_update_defaults_to_the_supplied_fields_but_the_key(db):
    checked = LoadSpec(
        Event, [EVENT], mode=LoadMode.UPSERT, unique="organization_id,external_id", run=SERIAL
    ).validate()
    assert checked.job.update == ("name",)
    assert checked.job.operation == "upsert"


def test_load_refuses_what_it_cannot_write(db, tmp_path):
    refused(LoadSpec("testapp.Person", []), "expected a model class")
    refused(LoadSpec(Restaurant, []), "multi-table inheritance")
    refused(LoadSpec(Person, tmp_path / "missing.csv"), "input file", "does not exist")
    empty = tmp_path / "empty.csv"
    empty.write_text("username\n")
    with pytest.raises(InputError, match="holds no records"):
        LoadSpec(Person, str(empty)).validate()


def test_create_ignoring_conflicts_is_its_own_writer_mode(db):
    checked = LoadSpec(
        Person, [{"username": "a"}], mode=LoadMode.CREATE_IGNORE, run=SERIAL
    ).validate()
    assert checked.job.ignore_conflicts is True
    assert checked.job.operation == "create"


# -- save ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "phrase"),
    [
        ({"transaction": "row"}, "transaction must be 'chunk' or 'object'"),
        ({"match": "username"}, "--match goes with --input"),
        ({"delimiter": ";"}, "--delimiter goes with --input"),
        ({"fields": ","}, "--fields is empty"),
        ({"fields": "scor"}, "unknown field 'scor' in --fields"),
        ({"setup": "nosuchmodule:fn"}, "--setup 'nosuchmodule:fn'"),
    ],
)
def test_save_queryset_rules(db, options, phrase):
    refused(SaveSpec(Person, run=SERIAL, **options), phrase)


@pytest.mark.parametrize(
    ("source", "options", "phrase"),
    [
        (Person.objects.filter(active=True), {}, "--input cannot be combined with --filter"),
        (Person, {"func": "testproject.testapp.transforms:noop"}, "--input cannot be combined"),
        (Person, {"fields": "score"}, "--input cannot be combined"),
        ("testapp.Person", {}, "with rows, the first argument must be a model class"),
        (Person, {"match": "email"}, "--match email is not covered by a unique constraint"),
    ],
)
def test_save_input_rules(db, source, options, phrase):
    refused(SaveSpec(source, [{"username": "a"}], run=SERIAL, **options), phrase)


def test_save_queryset_fingerprint_keeps_its_keys(db):
    """Journals written before save had its own fingerprint still resume: same keys."""
    checked = SaveSpec(Person, fields="score", run=RunSpec(chunk=9, executor="serial")).validate()
    assert set(checked.fingerprint) == {
        "operation", "model", "database", "selection", "set", "func", "fields", "touch",
        "chunk", "transaction",
    }  # fmt: skip
    assert checked.fingerprint["operation"] == "save"
    assert checked.fingerprint["fields"] == ["score"]
    assert checked.notes == ()
    dry = SaveSpec(Person, run=RunSpec(dry_run=True, executor="serial")).validate()
    assert "dry run: save() overrides" in dry.notes[0]


# -- the CLI meets the same rules ------------------------------------------------------

PERSON = ("--settings", "testproject.settings", "--model", "testapp.Person")


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (("update", *PERSON, "--set", "score=1", "--fields", "score"), "--fields goes with --func"),
        (("save", *PERSON, "--input", "{rows}", "--filter", "active=true"), "--input cannot"),
        (("save", *PERSON, "--match", "username"), "--match goes with --input"),
    ],
)
def test_the_cli_reports_a_spec_rule_as_a_usage_error(db, run_cli, tmp_path, args, phrase):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"username": "a"}\n')
    result = run_cli(*(a.format(rows=rows) for a in args))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and phrase in errors[0], result.stderr
    assert Person.objects.count() == 0
