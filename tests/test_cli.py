"""The ``bulkpar`` executable: real subprocesses, exit codes, messages, JSON reports."""

from __future__ import annotations

import json
import re

import click
import pytest
from click.testing import CliRunner
from django.db.models import F
from testproject.testapp.models import Person

from bulkpar.cli.app import cli

T = "testproject.testapp.transforms"
MODEL = ("--settings", "testproject.settings", "--model", "testapp.Person")
JSON_KEYS = {
    "operation",
    "model",
    "matched",
    "written",
    "unchanged",
    "failed_chunks",
    "chunks",
    "workers",
    "seconds",
    "rows_per_second",
    "chunk_seconds",
    "errors",
}


def run_json(run_cli, *args, **kwargs):
    result = run_cli("update", *MODEL, "--json", *args, **kwargs)
    assert result.stdout.strip(), result.stderr
    return result, json.loads(result.stdout)


def test_set_through_the_cli(people, run_cli):
    people(40)
    result, report = run_json(
        run_cli,
        "--filter",
        "active=true",
        "--filter",
        "score__gte=10",
        "--set",
        "nickname=vip",
        "--set",
        "email=x@y.z",
        "--chunk",
        "6",
        "--workers",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert report.keys() >= JSON_KEYS
    assert report["operation"] == "update" and report["model"] == "testapp.Person"
    assert (report["matched"], report["written"], report["chunks"]) == (15, 15, 3)
    assert set(report["chunk_seconds"]) == {"p50", "p95", "max"}
    assert report["errors"] == [] and report["failed_chunks"] == 0
    assert Person.objects.filter(nickname="vip", email="x@y.z").count() == 15


def test_func_through_the_cli_with_a_human_report(people, run_cli):
    people(30)
    result = run_cli(
        "update", *MODEL, "--func", f"{T}:bump_score", "--chunk", "7", "--workers", "2"
    )
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert lines[0] == "bulkpar update testapp.Person"
    assert re.fullmatch(r"rows matched\s+30", lines[1])
    assert re.fullmatch(r"rows written\s+30", lines[2])
    assert re.fullmatch(r"rows unchanged\s+0", lines[3])
    assert "rows matched 30 = written 30 ✓" in lines
    assert "p50" in result.stdout
    assert "\r" not in result.stderr  # no progress bar when stderr is not a terminal
    assert Person.objects.filter(score=F("id")).count() == 30


def test_exclude_and_typed_date_filter(people, run_cli):
    people(10)
    result, report = run_json(
        run_cli,
        "--filter",
        "created_on__lt=2999-01-01",
        "--exclude",
        "score__in=1,2,3",
        "--set",
        "active=false",
        "--workers",
        "1",
    )
    assert result.returncode == 0, result.stderr
    # scores 0,4..9 are selected; of those 0,4,6,8 were active
    assert (report["matched"], report["written"], report["unchanged"]) == (7, 4, 3)
    assert Person.objects.filter(active=True).count() == 1  # only score 2 stays active


def test_empty_selection_exits_zero(people, run_cli):
    people(3)
    result, report = run_json(run_cli, "--filter", "score__gt=99", "--set", "score=1")
    assert result.returncode == 0, result.stderr
    assert (report["matched"], report["written"], report["chunks"]) == (0, 0, 0)


def test_failing_row_exits_non_zero_with_the_error_in_the_report(people, run_cli):
    people(30)
    result, report = run_json(
        run_cli, "--func", f"{T}:fail_on_user_13", "--chunk", "10", "--workers", "1"
    )
    assert result.returncode == 1
    assert report["failed_chunks"] == 1
    [error] = report["errors"]
    assert error["chunk"] == 1 and "bad row user13" in error["error"] and error["row"] == 14
    assert "Traceback" in error["traceback"] and "fail_on_user_13" in error["traceback"]
    bumped = set(Person.objects.filter(score=F("id")).values_list("pk", flat=True))
    assert not bumped & set(range(11, 21))  # the failed chunk rolled back entirely
    assert set(range(1, 11)) <= bumped  # chunk 0 committed
    assert report["written"] == len(bumped)  # the report reconciles with the table


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (
            ("--model", "testapp.Person", "--set", "score=1"),
            {"DJANGO_SETTINGS_MODULE": ""},
            1,
            "no Django settings module given; pass --settings",
        ),
        (
            ("--settings", "nosuch.settings", "--model", "testapp.Person", "--set", "score=1"),
            {},
            1,
            "cannot import settings module 'nosuch.settings'",
        ),
        (
            ("--settings", "testproject.settings", "--model", "testap.Person", "--set", "score=1"),
            {},
            2,
            "did you mean 'testapp.Person'?",
        ),
        (
            ("--settings", "testproject.settings", "--model", "testapp.Persn", "--set", "score=1"),
            {},
            2,
            "unknown model 'testapp.Persn'; did you mean 'testapp.Person'?",
        ),
        (
            (*MODEL, "--filter", "scroe=1", "--set", "score=1"),
            {},
            2,
            "unknown field 'scroe' in --filter 'scroe=1' for model testapp.Person; "
            "did you mean 'score'?",
        ),
        ((*MODEL, "--set", "emial=x"), {}, 2, "unknown field 'emial' in --set 'emial=x'"),
        (
            (*MODEL, "--func", f"{T}:bump_score", "--fields", "scor"),
            {},
            2,
            "unknown field 'scor' in fields",
        ),
        ((*MODEL, "--set", "score=abc"), {}, 2, "invalid value 'abc' for --set 'score=abc'"),
        (
            (*MODEL, "--func", "nosuchmodule:fn"),
            {},
            2,
            "cannot import module 'nosuchmodule' for --func 'nosuchmodule:fn'",
        ),
        ((*MODEL, "--func", f"{T}:bump_scor"), {}, 2, "did you mean 'bump_score'?"),
        ((*MODEL, "--func", f"{T}:not_callable"), {}, 2, "is not callable"),
        (
            (*MODEL, "--set", "score=1", "--func", f"{T}:noop"),
            {},
            2,
            "give either --set FIELD=VALUE or --func",
        ),
        ((*MODEL, "--set", "score=1", "--chunk", "0"), {}, 2, "Invalid value for '--chunk'"),
        (
            (*MODEL, "--set", "score=1"),
            {
                "BULKPAR_TEST_DB": "postgres",
                "BULKPAR_TEST_DB_HOST": "127.0.0.1",
                "BULKPAR_TEST_DB_PORT": "9",
            },
            1,
            "cannot connect to postgresql database",
        ),
    ],
)
def test_errors_are_one_clear_line(db, run_cli, args, env, code, message):
    result = run_cli("update", *args, env=env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert Person.objects.count() == 0


def test_traceback_flag_shows_the_traceback(db, run_cli):
    result = run_cli(
        "update", "--settings", "nosuch.settings", "--model", "a.B", "--set", "x=1", "--traceback"
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ModuleNotFoundError" in result.stderr


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    """Every command and subcommand of ``group``, with the words that invoke it."""
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


COMMANDS = list(_commands(cli))


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help(path, command):
    assert command.help and command.help.strip(), f"bulkpar {' '.join(path)} has no help text"
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: cli {' '.join(path)} ")
    assert command.help.strip().splitlines()[0] in result.output
    short = CliRunner().invoke(cli, [*path, "-h"])
    assert short.exit_code == 0 and short.output == result.output


def test_the_executable_prints_help(run_cli):
    result = run_cli("update", "-h")
    assert result.returncode == 0 and "--func" in result.stdout and "--set" in result.stdout


def test_python_dash_m_and_version(run_cli):
    result = run_cli("--version")
    assert result.returncode == 0 and "bulkpar" in result.stdout


def test_manage_py_command(people, run_cli):
    import subprocess
    import sys

    people(12)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "bulkpar",
            "update",
            "--model",
            "testapp.Person",
            "--set",
            "nickname=m",
            "--workers",
            "2",
            "--chunk",
            "5",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["written"] == 12
    assert Person.objects.filter(nickname="m").count() == 12
